"""Real-process helpers for the tests: a Mosquitto broker, an MQTT recorder, service processes."""
