"""fer-service: the serving side (gateway, backends, handlers)."""
