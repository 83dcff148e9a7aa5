"""A customer talks to the bot and asks for a human; the worker assigns the agent, who answers.
Usage: chat.py PORT CUSTOMER_TOKEN AGENT_TOKEN (exit status 0 when all of it happened)."""
import asyncio
import json
import sys

import websockets

port, cust_token, agent_token = sys.argv[1:4]


async def recv(ws, want, **fields):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("type") == want and all(m.get(k) == v for k, v in fields.items()):
            return m


async def main():
    url = f"ws://127.0.0.1:{port}/ws?token="
    async with websockets.connect(url + cust_token) as c, websockets.connect(url + agent_token) as a:
        await recv(c, "welcome")
        await recv(a, "welcome")
        await a.send(json.dumps({"type": "agent.status", "req": 1, "status": "available"}))
        await recv(a, "ok", req=1)
        await c.send(json.dumps({"type": "conv.open", "req": 1, "topic": "deploy test"}))
        conv = (await recv(c, "ok", req=1))["conv"]
        await recv(c, "msg", conv=conv)  # the bot's greeting
        await c.send(json.dumps({"type": "msg.send", "req": 2, "conv": conv, "text": "human",
                                 "cid": "deploy-1"}))
        await recv(c, "ok", req=2)
        await recv(a, "conv.assigned", conv=conv)
        await a.send(json.dumps({"type": "msg.send", "req": 2, "conv": conv, "text": "hello",
                                 "cid": "deploy-2"}))
        await recv(a, "ok", req=2)
        m = await recv(c, "msg", conv=conv, text="hello")
        print(f"chat: bot, handoff, assignment and reply in {conv} ({m['id']})")


asyncio.run(main())
