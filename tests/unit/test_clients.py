"""AsyncLazy: the track instance's tracker, built once by its start however many clicks ask for it meanwhile."""

import asyncio

import pytest

from shared.clients import AsyncLazy


def test_concurrent_first_uses_share_one_build_and_a_failed_build_is_tried_again() -> None:
    builds: list[int] = []

    async def build() -> str:
        builds.append(len(builds))
        await asyncio.sleep(0.01)  # still building while the others ask
        if len(builds) == 1:
            raise RuntimeError("no credentials yet")
        return "tracker"

    async def scenario() -> None:
        lazy = AsyncLazy(build)
        failed = await asyncio.gather(*(lazy.get() for _ in range(5)), return_exceptions=True)
        assert [repr(e) for e in failed] == [repr(RuntimeError("no credentials yet"))] * 5 and builds == [0]
        assert await asyncio.gather(*(lazy.get() for _ in range(5))) == ["tracker"] * 5
        assert builds == [0, 1] and lazy.built() == "tracker"

    asyncio.run(scenario())


def test_a_click_that_goes_away_does_not_cancel_the_build_others_wait_for() -> None:
    async def scenario() -> None:
        lazy = AsyncLazy(lambda: asyncio.sleep(0.05, result="tracker"))
        leaving = asyncio.create_task(lazy.get())
        staying = asyncio.create_task(lazy.get())
        await asyncio.sleep(0.01)
        leaving.cancel()
        assert await staying == "tracker"
        with pytest.raises(asyncio.CancelledError):
            await leaving

    asyncio.run(scenario())
