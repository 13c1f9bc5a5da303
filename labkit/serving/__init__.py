"""An inference server with swappable schedulers, a model repository and a load generator (labs 02, 12)."""
