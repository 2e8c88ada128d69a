"""Operating the project's services: the team's MLflow tracking server on PostgreSQL (`aepipe
server`) and the stage host that starts stages warm (`aepipe host`)."""
