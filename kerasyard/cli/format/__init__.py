"""What the command line shows, built with rich from dicts shaped like the API's JSON.

Builders return a rich renderable (a ``Table``, a ``Text``, a ``Group``) or a plain string;
nothing here does I/O. :func:`plain` renders one as text with no colour and no padding at the
ends of lines: what goes to a pipe or a log file, and what the unit tests read. On a terminal
the command prints the renderable itself, and rich decides on colour (none with ``NO_COLOR``
set or ``TERM=dumb``) and fits tables to the terminal's width.

One module per subject, every name importable from here (``from kerasyard.cli import format
as fmt``; ``fmt.jobs_table(...)``):

- :mod:`.exits`: exit codes, and API errors as the command reports them;
- :mod:`.cells`: numbers, durations, ages, status colours, tables, :func:`plain`;
- :mod:`.jobs`: a job's progress line, live line, final lines, the jobs table, its details;
- :mod:`.history`: a job's per-epoch metrics as a table and as CSV;
- :mod:`.sweeps`: a sweep's trials table, its watch lines, its details, the sweeps table;
- :mod:`.compare`: ``compare``'s side-by-side table and its JSON.
"""

from .cells import (
    STATUS_STYLES,
    eta_seconds,
    fmt_age,
    fmt_duration,
    fmt_number,
    key_values,
    parse_time,
    plain,
    short_id,
    status_text,
    table,
    took,
    updates,
)
from .compare import LECTURE, compare_data, compare_table, final_metrics, flatten, spec_differences
from .exits import (
    EXIT_CANCELLED,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OTHER,
    EXIT_SUCCEEDED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for_error,
    exit_code_for_status,
    render_api_error,
)
from .history import TIMING_COLUMNS, history_columns, history_csv, history_table, metric_names
from .jobs import (
    best_epoch_line,
    epoch_progress,
    final_line,
    job_details,
    job_label,
    jobs_table,
    live_job,
    plan_line,
    progress_bar,
    progress_line,
    watch_line,
)
from .sweeps import (
    best_line,
    fmt_objective,
    fmt_params,
    objective_label,
    running_trials,
    sweep_details,
    sweep_header,
    sweep_progress,
    sweep_watch_block,
    sweeps_table,
    trial_event,
    trial_state,
    trials_table,
    visible_trials,
)

__all__ = [
    "EXIT_CANCELLED", "EXIT_CODES_HELP", "EXIT_FAILED", "EXIT_OTHER", "EXIT_SUCCEEDED",
    "EXIT_UNREACHABLE", "EXIT_USAGE", "LECTURE", "STATUS_STYLES", "TIMING_COLUMNS",
    "best_epoch_line", "best_line",
    "compare_data", "compare_table", "epoch_progress", "eta_seconds", "exit_code_for_error",
    "exit_code_for_status", "final_line", "final_metrics", "flatten", "fmt_age", "fmt_duration",
    "fmt_number", "fmt_objective", "fmt_params", "history_columns", "history_csv",
    "history_table", "job_details", "job_label", "jobs_table", "key_values", "live_job",
    "metric_names", "objective_label", "parse_time", "plain", "plan_line", "progress_bar",
    "progress_line", "render_api_error", "running_trials", "short_id", "spec_differences",
    "status_text", "sweep_details", "sweep_header", "sweep_progress", "sweep_watch_block",
    "sweeps_table", "table", "took", "trial_event", "trial_state", "trials_table", "updates",
    "visible_trials", "watch_line",
]
