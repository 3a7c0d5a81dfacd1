"""The OpenAPI schemas of what each VM's guest agent says (`GET /vm/<name>/guest`, `/guests`)."""

from __future__ import annotations

from typing import Any

from gateway.web.openapi_schemas import _B, _I, _N, _S, _list, _obj, _opt, ref

_GUEST_STATUS = {"type": "string", "enum": ["ok", "unavailable"]}
_ADDRESS = _obj(
    {
        "interface": _S,
        "hwaddr": _opt(_S),
        "family": {"type": "string", "enum": ["ipv4", "ipv6"]},
        "address": _S,
        "prefix": _I,
    }
)
_GUEST_OS = _opt(
    _obj(
        {
            key: _opt(_S)
            for key in (
                "id",
                "name",
                "pretty_name",
                "version",
                "version_id",
                "kernel_release",
                "kernel_version",
                "machine",
            )
        }
    )
)
_GUEST_COMMON = {
    "reason": _opt(_S),
    "address_source": _opt({"type": "string", "enum": ["agent", "lease", "arp"]}),
    "addresses": {"type": "array", "items": _ADDRESS},
    "os": _GUEST_OS,
    "hostname": _opt(_S),
}
_FILESYSTEM = _obj(
    {
        "mountpoint": _S,
        "device": _opt(_S),
        "type": _opt(_S),
        "used_bytes": _opt(_I),
        "total_bytes": _opt(_I),
        "used_percent": _opt(_N),
    }
)
GUEST_SCHEMAS: dict[str, Any] = {
    "GuestBrief": _obj({"status": _GUEST_STATUS, **_GUEST_COMMON, "updated_at": _S}),
    "Guest": _obj(
        {
            "host": _S,
            "uuid": _S,
            "name": _S,
            # `unknown`: the VM's agent has said nothing of its guest yet.
            "status": {"type": "string", "enum": ["ok", "unavailable", "unknown"]},
            **_GUEST_COMMON,
            "timezone": _opt(_S),
            "timezone_offset_s": _opt(_I),
            "users": _opt(_I),
            "filesystems": {"type": "array", "items": _FILESYSTEM},
            "truncated": _B,
            "updated_at": _opt(_S),
        }
    ),
    "GuestList": _list(
        "guests",
        {"allOf": [_obj({"host": _S, "uuid": _S, "name": _S}), ref("GuestBrief")]},
    ),
}
