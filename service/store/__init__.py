"""What the control plane keeps: the engine and its sessions (:mod:`.db`), the tables
(:mod:`.models`), ids and their prefixes (:mod:`.ids`), cursors
(:mod:`.paging`)."""
