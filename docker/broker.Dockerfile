# The official Mosquitto 2 image with the project's broker configs.
FROM eclipse-mosquitto:2
COPY broker/ /mosquitto/config/kvmsup/
COPY docker/mosquitto.compose.conf /mosquitto/config/mosquitto.conf
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
