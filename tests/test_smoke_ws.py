import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def test_send_and_receive(make_user, character):
    user = await database_sync_to_async(make_user)()
    token = access_token_for(user)
    ws = WebsocketCommunicator(application, f"/ws/chat/?token={token}")
    connected, _ = await ws.connect()
    assert connected
    ready = await ws.receive_json_from()
    assert ready["type"] == "session:ready"
    await ws.send_json_to({"type": "conversation:join", "character": "tester"})
    joined = await ws.receive_json_from()
    assert joined["type"] == "conversation:joined", joined
    cid = joined["conversation"]["id"]
    await ws.send_json_to(
        {"type": "message:send", "conversation": cid, "client_id": "a1", "text": "hi **there**"}
    )
    frames = [await ws.receive_json_from(timeout=3), await ws.receive_json_from(timeout=3)]
    print(frames)
    await ws.disconnect()
