"""The one place avar talks to MLflow (runs, LoggedModels, the registry)."""
