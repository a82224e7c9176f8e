"""modelplane operator: reconciles ModelDeployment objects into Deployments and Services."""
