"""Publication: gated models go to the endpoint (SageMaker in prod, the local container locally)."""
