"""The gateway's HTTP layer: the REST routes (`api`, and `snapshots` for a VM's snapshots), the
dashboard's files (`dashboard`), the OpenAPI document (`openapi`, `openapi_schemas`), the
Prometheus route and collectors (`prometheus`, `collectors`), the role check of every route
(`roles`), and the one place errors get HTTP statuses (`http_errors`).

May import: Flask, `shared`, `gateway.core`, the top-level modules (`service`, `current`,
`auth`, `errors`, `config`, `blocking`, `inputs`, `throttle`, `stalls`) and the adapters' constants.
Reaches the gateway service only through `gateway.current`. Never `gateway.realtime`.
"""
