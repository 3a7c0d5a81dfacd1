"""KVMSUP_SIO_MESSAGE_QUEUE: a Redis URL only, and its password never shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings

pytestmark = pytest.mark.unit

SECRET = "hunter2-very-secret"


def test_a_redis_url_is_taken_and_its_password_stays_out_of_the_repr() -> None:
    url = f"redis://:{SECRET}@redis.lan:6379/0"
    settings = Settings(sio_message_queue=url)
    assert settings.sio_message_queue == url
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert Settings(sio_message_queue=f"rediss://u:{SECRET}@redis.lan").sio_message_queue
    assert Settings().sio_message_queue is None
    assert Settings(sio_message_queue="").sio_message_queue is None  # set but empty: off


@pytest.mark.parametrize(
    "url", [f"amqp://u:{SECRET}@rabbit.lan//", f"kafka://{SECRET}@k.lan", f"redis.lan:{SECRET}"]
)
def test_another_queue_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(sio_message_queue=url)
    errors = exc.value.errors()
    assert [e["loc"] for e in errors] == [("sio_message_queue",)]
    assert SECRET not in str(exc.value) and SECRET not in errors[0]["msg"]
