"""Operating the team's services: the MLflow tracking server on PostgreSQL (`aepipe server`)."""
