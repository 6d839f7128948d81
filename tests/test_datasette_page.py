"""The search page Datasette gets for each index (datasette_plugin.py): a
real ``datasette`` server on 127.0.0.1 with the plugin and the example
MiniLM model installed, driven by Debian's headless Chromium (selenium and
chromedriver): the database page links it, a text typed into its box finds
what an exact scan finds, an error shows as a row saying so. A screenshot
of each page goes to test-artefacts/ (make test installs Chromium)."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from datasette.app import Datasette

from llm_vector_index import Index
from llm_vector_index.datasette_plugin import search_queries
from llm_vector_index.testing import write_embeddings

ARTEFACTS = Path(__file__).parent.parent / "test-artefacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = {
    "shutil.copy": "Copy data and mode bits. Return the file's destination.",
    "shutil.rmtree": "Recursively delete a directory tree.",
    "json.dumps": "Serialize an object to a JSON formatted string.",
    "json.loads": "Deserialize a string containing a JSON document to a Python object.",
    "os.listdir": "Return a list containing the names of the files in the directory.",
    "time.sleep": "Delay execution for a given number of seconds.",
    "random.shuffle": "Shuffle a list in place.",
    "zlib.compress": "Returns a bytes object containing compressed data.",
    "math.sqrt": "Return the square root of x.",
    "socket.create_connection": "Connect to an address and return the socket object.",
    "csv.reader": "Return a reader object that iterates over lines in the given CSV file.",
    "gzip.open": "Open a gzip-compressed file in binary or text mode.",
}


@pytest.fixture(scope="module")
def minilm():
    module = pytest.importorskip("llm_minilm_onnx")
    if not module.available():
        pytest.skip("the example model's packages are not installed (make test installs them)")
    return module.MiniLM()


@pytest.fixture
def served(tmp_path, minilm, user_path):
    "A database of real docstrings embedded with MiniLM, an exact index, and datasette serving it."
    db_path = tmp_path / "notes.db"
    from sqlite_utils import Database

    db = Database(db_path)
    ids = list(DOCS)
    vectors = np.array(list(minilm.embed_multi([DOCS[id] for id in ids])), dtype="<f4")
    write_embeddings(
        db, "stdlib", ids, vectors, model=minilm.model_id, contents=[DOCS[id] for id in ids]
    )
    Index.create("stdlib-idx", ["stdlib"], db, backend="exact").build()
    db.conn.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    datasette = shutil.which("datasette", path=str(Path(sys.executable).parent))
    env = {**os.environ, "LLM_USER_PATH": str(user_path)}
    server = subprocess.Popen(
        [datasette, str(db_path), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{url}/-/versions.json", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"datasette exited: {server.stderr.read().decode()}")
                time.sleep(0.1)
        yield url, ids, vectors
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(
            "Debian's chromium and chromium-driver are needed: make test installs them "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)
    try:
        yield driver
    finally:
        driver.quit()


def search(browser, text):
    "Type ``text`` into the page's box and run it, as a person would."
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.CSS_SELECTOR, "form input[type=submit]").click()
    return [
        [cell.text.strip() for cell in row.find_elements(By.TAG_NAME, "td")]  # NULL: &nbsp;
        for row in browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
    ]


def test_a_person_searches_an_index_from_datasettes_page(served, browser, minilm):
    from selenium.webdriver.common.by import By

    url, ids, vectors = served
    ARTEFACTS.mkdir(exist_ok=True)
    browser.get(f"{url}/notes")
    browser.find_element(By.LINK_TEXT, "Search stdlib-idx").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Search stdlib-idx"
    assert "embedded with minilm" in browser.page_source.lower()
    assert search(browser, "   ") == []  # an empty box shows nothing, not an error
    text = "remove a folder and everything in it"
    rows = search(browser, text)
    browser.save_screenshot(str(ARTEFACTS / "datasette-search.png"))
    query = np.array(next(iter(minilm.embed_multi([text]))))
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = [ids[i] for i in np.argsort(-scores)[:10]]
    assert [row[1] for row in rows] == expected and expected[0] == "shutil.rmtree"
    assert [row[0] for row in rows] == [str(rank) for rank in range(1, 11)]
    assert float(rows[0][2]) == pytest.approx(float(np.max(scores)), abs=1e-3)
    assert rows[0][3] == DOCS["shutil.rmtree"]


def test_an_error_shows_on_the_page_as_a_row_saying_so(served, browser):
    url, _, _ = served
    ARTEFACTS.mkdir(exist_ok=True)
    browser.get(f"{url}/notes/search-stdlib-idx")
    rows = search(browser, "x" * 2001)
    browser.save_screenshot(str(ARTEFACTS / "datasette-search-error.png"))
    assert rows == [["", "", "", "Error: text to embed must be at most 2000 characters, got 2001"]]


def test_only_valid_index_names_get_a_page():
    queries = search_queries(
        [("good.idx-1", "m"), ("x', 1, 1)) --", "m"), (None, "m"), (7, None), ("", "m")]
    )
    assert list(queries) == ["search-good.idx-1"]
    assert "vector_index_query('good.idx-1', :q, 10)" in queries["search-good.idx-1"]["sql"]


def test_a_database_without_indexes_has_no_search_pages(tmp_path, db_path, db):
    write_embeddings(db, "plain", ["a"], np.ones((1, 4), dtype="<f4"))
    datasette = Datasette([str(db_path)])

    async def listed():
        response = await datasette.client.get("/embeddings.json")
        return response.status_code, response.json()["queries"]

    assert asyncio.run(listed()) == (200, [])
