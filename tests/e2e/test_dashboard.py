"""The teacher dashboard in Chromium: sign in with a teacher code, every room live (occupants,
hands, polls, messages arrive without a reload), a room's storage as a tree; a student code is
refused; and the time from a posted message to the page showing it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_permissions import SECRET, enter

from .lab import chromium_page


@pytest.mark.e2e
async def test_a_teacher_watches_every_room_live(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, teacher_codes=["TEACH-7"], join_codes=["STUDENTS-1"])
    ada = await enter(make_client, server, "ada", "student", "algebra")
    ada.storage("notes").append("x = 2")
    await enter(make_client, server, "bob", "student", "geometry")

    async with chromium_page() as (page, problems):
        await page.goto(f"http://127.0.0.1:{server.port}/dashboard")

        await page.fill("input[name=code]", "STUDENTS-1")
        await page.click("#sign-in button")
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=sign-in-error]').textContent.includes('teacher')")

        await page.fill("input[name=code]", "TEACH-7")
        await page.fill("input[name=name]", "Ms Lovelace")
        await page.click("#sign-in button")
        algebra = page.locator("[data-testid=room-algebra]")
        await algebra.wait_for(timeout=20_000)
        await page.locator("[data-testid=room-geometry]").wait_for(timeout=20_000)
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=room-algebra] [data-testid=occupants]')"
            "?.textContent.includes('Ada (student)')", timeout=20_000)

        # Live: a message, a hand and a poll show up without a reload.
        sent = time.perf_counter()
        await ada.call("messages.post", {"id": "m1", "text": "is x = 2?"})
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=room-algebra] [data-testid=messages]')"
            "?.textContent.includes('Ada: is x = 2?')", timeout=20_000)
        shown_after = time.perf_counter() - sent
        await ada.call("hands.raise", {"note": "stuck"})
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=room-algebra] [data-testid=hands]')"
            "?.textContent.includes('Ada')", timeout=20_000)
        assert "stuck" not in await algebra.text_content()  # the note stays in the teacher's notebook view
        teacher = await enter(make_client, server, "ms-l", "teacher", "algebra")
        await teacher.call("polls.create", {"question": "Is it stable?", "options": ["yes", "no"]})
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=room-algebra] [data-testid=polls]')"
            "?.textContent.includes('Is it stable? — 0 voted')", timeout=20_000)

        # A room's page: its storage as a tree.
        await page.click("[data-testid=room-algebra] h2 a")
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=room-tree]').textContent.includes('\"x = 2\"')",
            timeout=20_000)
        assert problems == []
        print(f"\ndashboard: a posted message was on the page {shown_after * 1000:.0f} ms later")
