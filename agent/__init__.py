"""The KVM host agent: libvirt → MQTT, commands back."""

__version__ = "0.1.0"
