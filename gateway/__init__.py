"""Front doors for network gateways (CONTRACT §6): Diameter Gy/Ro and Nchf_ConvergedCharging,
bridged to the engines over Kafka (``gateway.bridge``)."""
