"""What users upload: datasets (CSV, NumPy) and Keras models, checked, profiled and stored."""
