"""Message models and MQTT topics shared by the agent and the gateway."""
