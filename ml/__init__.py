"""ML veto of strategy signals: features, readiness, labels, training, MLflow registry and serving.

Nothing here is imported by ``pine`` or the workers at import time; mlflow is imported only
inside the registry and serving functions that need it.
"""
