"""A short agent loop over Memory Nexus: every turn is remembered, and the
agent recalls before it answers. The "model" is a stub (no network): it
answers from what memory returns, which is the part this example shows.

Run against a running daemon:  nexusd &  python python/examples/agent_loop.py
(the socket comes from $NEXUS_SOCKET, else the daemon's default).
"""

from __future__ import annotations

import sys
from typing import Sequence

import nexus_memory
from nexus_memory import Client, Hit

NAMESPACE = "agent-loop-example"

CONVERSATION: Sequence[str] = (
    "My name is Ada and I live in Lisbon.",
    "I am allergic to peanuts.",
    "My favourite programming language is Rust.",
    "What do you remember about where I live?",
    "Which language should I use for my next project?",
    "Suggest a snack for me.",
)


def stub_model(user: str, memories: Sequence[Hit]) -> str:
    """Stands in for an LLM: it cites the memories it was given."""
    if not memories:
        return "I have nothing on that yet; tell me more."
    context = "; ".join(m.text for m in memories)
    return f"Based on what you told me ({context}), here is my answer to: {user!r}"


def run(client: Client) -> None:
    client.forget(namespace=NAMESPACE)
    for turn, user in enumerate(CONVERSATION):
        # Recall what the user said (not the agent's own replies, which would echo).
        answer = client.recall_answer(user, namespace=NAMESPACE, k=2, tags={"role": "user"})
        reply = stub_model(user, answer.hits)
        print(f"user : {user}\nagent: {reply}\n       (route {answer.route}: {answer.route_reason})")
        for hit in answer.hits:
            # A real agent would judge usefulness; the stub calls every recalled memory useful.
            client.feedback(hit.id, answer.request_id, useful=True)
        client.remember(user, namespace=NAMESPACE, tags={"role": "user", "turn": str(turn)})
        client.remember(reply, namespace=NAMESPACE, tags={"role": "agent", "turn": str(turn)}, importance=0.5)
    print(f"{client.stats().get('memories', 0)} memories stored in the daemon")


def main() -> int:
    try:
        with Client() as client:
            run(client)
    except nexus_memory.DaemonNotRunning as error:
        print(f"{error}\nstart one with: nexusd", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
