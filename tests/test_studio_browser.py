"""The studio's web page in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium):
sign in, upload a portrait, pick a template, consent, run, and see the finished, labelled video."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_studio import Server

from vivify.demo import face_crop

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=390,900"):
        options.add_argument(argument)  # a phone-sized window
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _sign_in(browser, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#signin button[type=submit], #signin input[type=submit]").click()


def test_make_a_video_in_the_web_app(tmp_path: Path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    portrait = tmp_path / "astronaut.png"
    Image.fromarray(face_crop(256)).save(portrait)
    (tmp_path / "studio").mkdir()
    server = Server(tmp_path / "studio").start()
    try:
        token = server.user("grace")["Authorization"].split()[1]
        wait = WebDriverWait(browser, 240)
        browser.get(server.url + "/")
        _sign_in(browser, "wrong-token")
        # The page's own words: the API's answer tells a program which header to send.
        wait.until(lambda _: browser.find_element(By.ID, "message").text)
        assert browser.find_element(By.ID, "message").text == "Your token was not accepted. Please sign in again."
        wait.until(ready.visibility_of_element_located((By.ID, "token"))).clear()
        _sign_in(browser, token)
        Select(wait.until(ready.visibility_of_element_located((By.ID, "kind")))).select_by_value("animate")
        assert browser.switch_to.active_element.get_attribute("id") == "kind"  # focus moved into the app
        browser.find_element(By.ID, "portrait").send_keys(str(portrait))
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, '[data-template="nod"]'))).click()
        submit = browser.find_element(By.ID, "submit")
        assert not submit.is_enabled()  # no job without consent, and the page says why
        assert browser.find_element(By.ID, "submit-hint").is_displayed()
        browser.find_element(By.ID, "consent").click()
        assert not browser.find_element(By.ID, "submit-hint").is_displayed()
        submit.click()
        done = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, '#jobs [data-status="done"]')))
        video = wait.until(lambda _: done.find_element(By.CSS_SELECTOR, "video.result"))
        wait.until(lambda _: (video.get_attribute("src") or "").startswith("blob:"))
        assert "AI-generated" in done.text
        assert done.find_element(By.CSS_SELECTOR, "a.download").get_attribute("download").endswith(".mp4")
        assert browser.find_element(By.ID, "message").text == ""
        # At the next visit a finished video is fetched only when asked for (each is a whole video).
        browser.refresh()
        done = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, '#jobs [data-status="done"]')))
        show = wait.until(lambda _: done.find_element(By.XPATH, ".//button[text()='Show the video']"))
        assert not done.find_elements(By.CSS_SELECTOR, "video.result")
        show.click()
        video = wait.until(lambda _: done.find_element(By.CSS_SELECTOR, "video.result"))
        wait.until(lambda _: (video.get_attribute("src") or "").startswith("blob:"))
    finally:
        server.stop()


def test_a_portrait_without_a_face_is_refused_on_the_page(tmp_path: Path, browser):
    """The upload is refused at once, and the page shows the API's one line, as it does other refusals."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 160, 3), (200, 190, 170), np.uint8)).save(wall)
    (tmp_path / "studio").mkdir()
    server = Server(tmp_path / "studio").start()
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(server.url + "/")
        _sign_in(browser, server.user("ivan")["Authorization"].split()[1])
        Select(wait.until(ready.visibility_of_element_located((By.ID, "kind")))).select_by_value("animate")
        browser.find_element(By.ID, "portrait").send_keys(str(wall))
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, '[data-template="nod"]'))).click()
        browser.find_element(By.ID, "consent").click()
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda _: browser.find_element(By.ID, "message").text)
        assert browser.find_element(By.ID, "message").text == "no face found in wall.png"
        assert not browser.find_elements(By.CSS_SELECTOR, "#jobs [data-status]")
    finally:
        server.stop()


def test_a_job_picking_its_references_shows_that_stage_on_the_page(tmp_path: Path, browser):
    """A grid's first pass (picking each portrait's reference frame) takes seconds to a minute, and the job's own
    share stays at 0 through it: the page names the stage and shows how far along it is."""
    import contextlib
    import json
    import sqlite3

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from vivify.progress import PICKING

    (tmp_path / "studio").mkdir()
    server = Server(tmp_path / "studio").start()
    try:
        token = server.user("grace")["Authorization"].split()[1]
        # A job running in that stage, written as the server's worker writes it (one statement: the server's
        # worker claims only queued jobs).
        with contextlib.closing(sqlite3.connect(tmp_path / "studio" / "studio.sqlite")) as db, db:
            db.execute("INSERT INTO jobs (id, user_id, kind, status, progress, stage, stage_progress, params, inputs, "
                       "consent, attempts, created, started) SELECT 'picking', id, 'sing', 'running', 0, ?, 0.44, "
                       "'{}', ?, '{}', 1, '2026-11-28T10:00:00.000+00:00', '2026-11-28T10:00:01.000+00:00' "
                       "FROM users WHERE name = 'grace'", (PICKING, json.dumps({"driving": ["song.mp4"]})))
        browser.get(server.url + "/")
        _sign_in(browser, token)
        shown = WebDriverWait(browser, 60).until(
            lambda _: browser.find_element(By.CSS_SELECTOR, '#jobs [data-job="picking"] .job-progress-text').text)
        assert shown == "Picking references 44%"
    finally:
        server.stop()
