"""The transport-neutral charging service (``service.charging``): what every door calls."""
