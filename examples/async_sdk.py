"""The async SDK end to end: write turns, recall with provenance, correct a memory, a background write.

    MEMSVC_URL=http://127.0.0.1:8080 MEMSVC_API_KEY=msk_... python examples/async_sdk.py [user_id]
"""

from __future__ import annotations

import asyncio
import sys

from memsvc_client import AsyncMemsvcClient, NotFound


async def main(user: str) -> None:
    async with AsyncMemsvcClient() as mem:  # MEMSVC_URL / MEMSVC_API_KEY from the environment
        await mem.add(user, [
            {"id": "a1", "role": "user", "content": "I moved to Berlin in May 2023.", "timestamp": "2023-05-20T10:00:00Z"},
            {"id": "a2", "role": "user", "content": "My cat is called Miso.", "timestamp": "2023-05-20T10:01:00Z"},
        ])
        found = await mem.search(user, "Where does the user live?", token_budget=100)
        best = min(found.results, key=lambda r: r.rank)
        print(f"recall: {best.content!r} from messages {best.source_ids} (score {best.score:.3f})")

        fixed = await mem.update(best.id, content="I moved to Berlin (Kreuzberg) in May 2023.")
        versions = (await mem.history(best.id)).versions
        print(f"corrected to version {fixed.version}; history: {[v.change for v in versions]}")

        job = await mem.add(user, [{"id": "a3", "role": "user", "content": "I started learning the cello."}], wait=False)
        result = await job.result(timeout=60)  # polls GET /v1/jobs/{id}
        print(f"background write {job.id}: {len(result.written)} memories")

        await mem.purge_user(user)
        try:
            await mem.get(best.id)
        except NotFound as err:
            print(f"after purge: {err.code}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "example-alice"))
