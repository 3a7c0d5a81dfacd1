"""The gateway's Socket.IO layer: the extension and its event handlers (`events`), the emit
bridge (`bridge`), the per-session guard (socket caps, auth deadline: `sessions`) and the checks
of the packets a client may send (`sio_packets`).

May import: Flask-SocketIO, `shared`, `gateway.core`, the top-level modules (`service`,
`current`, `auth`, `errors`, `config`, `blocking`, `inputs`, `throttle`) and
`gateway.web.http_errors` (an error ack carries the status a REST call would get). Never the
rest of `gateway.web`.
"""
