"""Stage 14, the server over an export directory (serving/, scripts/14_serve.py).

The exports here are FAKE: small tf.Modules of plain TF ops that follow task_export/layout.py's
contract (words stand in for subword pieces), so these tests do not depend on stage 13. The
fake classifier's label is ``FAKE_LABELS[number of words % 3]``; its token weights are the
tokens' lengths over their sum. The real server runs once per module, started with
scripts/14_serve.py in a subprocess; the page is checked in headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import tensorflow as tf
from click.testing import CliRunner

from serving import ExportedModel, MicroBatcher, create_app
from task_export.layout import LABELS_FILE, REPORT_FILE, SAVED_MODEL_DIR, SERVING_SIGNATURE
from tests.helpers import REPO_ROOT, load_script
from ulmfit_core.errors import InputError

logger = logging.getLogger(__name__)

FAKE_LABELS = ("negative", "neutral", "positive")
FAKE_TAGS = ("LOWER", "UPPER")
SEQ_LEN = 8
SERVE_SCRIPT = REPO_ROOT / "scripts" / "14_serve.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SERVER_START_TIMEOUT_S = 180  # TensorFlow's import on 2 busy cores can take a minute


def fake_label(text: str) -> str:
    return FAKE_LABELS[len(text.split()) % len(FAKE_LABELS)]


# ---- the fake exports --------------------------------------------------------------------------
class FakeTaskModel(tf.Module):
    """``serving_default(text)`` of a stage-13 export, built from plain TF ops."""

    def __init__(self, task: str, head: str | None) -> None:
        super().__init__()
        self.task, self.head = task, head

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        words = tf.strings.split(text)
        tokens = words.to_tensor(default_value="", shape=[None, SEQ_LEN])
        if self.task == "regressor":
            return {"score": tf.cast(tf.strings.length(text), tf.float32) / 10.0, "tokens": tokens}
        if self.task == "tagger":
            return {
                "tags": _fake_tags(words.to_tensor(default_value="")),
                "subword_tags": _fake_tags(tokens),
                "tokens": tokens,
            }
        classes = tf.math.floormod(words.row_lengths(), len(FAKE_LABELS))
        probabilities = tf.nn.softmax(2.0 * tf.one_hot(classes, len(FAKE_LABELS)))
        outputs = {
            "probabilities": probabilities,
            "label": tf.gather(tf.constant(FAKE_LABELS), tf.argmax(probabilities, axis=-1)),
            "tokens": tokens,
        }
        if self.head == "attention":
            lengths = tf.cast(tf.strings.length(tokens), tf.float32)
            total = tf.reduce_sum(lengths, axis=-1, keepdims=True)
            outputs["token_weights"] = tf.math.divide_no_nan(lengths, total)
        return outputs


def _fake_tags(words: tf.Tensor) -> tf.Tensor:
    """A tag per word: "UPPER" for one in capitals, "LOWER" for another, "" for padding."""
    upper = tf.where(tf.strings.upper(words) == words, FAKE_TAGS[1], FAKE_TAGS[0])
    return tf.where(words == "", "", upper)


def write_fake_export(path: Path, task: str = "classifier", head: str | None = "attention") -> Path:
    """A stage-13 export directory at ``path`` holding a :class:`FakeTaskModel`."""
    path.mkdir(parents=True)
    module = FakeTaskModel(task, head)
    tf.saved_model.save(
        module,
        str(path / SAVED_MODEL_DIR),
        signatures={SERVING_SIGNATURE: module.serve.get_concrete_function()},
    )
    labels = {"classifier": FAKE_LABELS, "tagger": FAKE_TAGS}.get(task, ())
    report = {"task": task, "labels": list(labels), "seq_len": SEQ_LEN}
    if task == "classifier":
        report["head"] = head
    (path / REPORT_FILE).write_text(json.dumps(report), encoding="utf-8")
    (path / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory) -> Path:
    return write_fake_export(tmp_path_factory.mktemp("serve") / "classifier")


@pytest.fixture(scope="module")
def classifier(classifier_export) -> ExportedModel:
    return ExportedModel.load(classifier_export)


# ---- ExportedModel ------------------------------------------------------------------------------
def test_classifier_predictions_strip_padding_and_keep_weights_aligned(classifier):
    texts = ["the cat sat", "a much longer text than the model's eight token window is"]
    first, second = classifier.predict(texts)

    assert first["label"] == fake_label(texts[0]) == "negative"
    assert second["label"] == fake_label(texts[1])
    assert list(first["probabilities"]) == list(FAKE_LABELS)
    assert max(first["probabilities"], key=first["probabilities"].get) == first["label"]
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert first["tokens"] == ["the", "cat", "sat"]
    assert first["token_weights"] == pytest.approx([3 / 9, 3 / 9, 3 / 9])
    assert second["tokens"] == texts[1].split()[:SEQ_LEN]  # truncated to T, no "" padding
    assert len(second["token_weights"]) == SEQ_LEN
    assert all(type(p) is float for p in first["probabilities"].values())
    json.dumps([first, second])  # JSON-ready as it is


def test_concat_classifier_has_no_token_weights(tmp_path):
    model = ExportedModel.load(write_fake_export(tmp_path / "concat", head="concat"))
    (prediction,) = model.predict(["one two"])
    assert set(prediction) == {"label", "probabilities", "tokens"}
    assert prediction["label"] == fake_label("one two")


def test_regressor_and_tagger_predictions(tmp_path):
    regressor = ExportedModel.load(write_fake_export(tmp_path / "regressor", "regressor"))
    assert regressor.predict(["abcde fghij"]) == [
        {"score": pytest.approx(1.1), "tokens": ["abcde", "fghij"]}
    ]
    tagger = ExportedModel.load(write_fake_export(tmp_path / "tagger", "tagger"))
    short, long = tagger.predict(["Only ONE word", "a b c d e f g h i j"])
    assert short == {
        "words": ["Only", "ONE", "word"],
        "tags": ["LOWER", "UPPER", "LOWER"],
        "tokens": ["Only", "ONE", "word"],
        "subword_tags": ["LOWER", "UPPER", "LOWER"],
    }
    assert len(long["tags"]) == 10 and len(long["subword_tags"]) == SEQ_LEN


def _break_report(export: Path, **changes) -> None:
    report = json.loads((export / REPORT_FILE).read_text(encoding="utf-8"))
    (export / REPORT_FILE).write_text(json.dumps(report | changes), encoding="utf-8")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_dir", "export directory .* not found"),
        ("no_report", "report.json not found"),
        ("bad_json", "not valid JSON"),
        ("unknown_task", "unknown task 'translator'"),
        ("no_saved_model", "is not a SavedModel"),
        ("labels_differ", "list different labels"),
        ("attention_without_weights", "lacks output.* token_weights"),
    ],
)
def test_load_rejects_a_broken_export_with_a_clear_error(
    classifier_export, tmp_path, breakage, message
):
    export = tmp_path / "export"
    if breakage != "no_dir":
        shutil.copytree(classifier_export, export)
    if breakage == "no_report":
        (export / REPORT_FILE).unlink()
    elif breakage == "bad_json":
        (export / REPORT_FILE).write_text("{task", encoding="utf-8")
    elif breakage == "unknown_task":
        _break_report(export, task="translator")
    elif breakage == "no_saved_model":
        shutil.rmtree(export / SAVED_MODEL_DIR)
    elif breakage == "labels_differ":
        _break_report(export, labels=["yes", "no", "maybe"])
    elif breakage == "attention_without_weights":
        export = write_fake_export(tmp_path / "concat", head="concat")
        _break_report(export, head="attention")
    with pytest.raises(InputError, match=message):
        ExportedModel.load(export)


# ---- MicroBatcher ------------------------------------------------------------------------------
class CountingModel:
    """A blocking predict that records its batches and takes ``seconds`` per call."""

    def __init__(self, seconds: float = 0.01, fail_on: str | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def predict(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.fail_on in texts:
            raise ValueError(f"cannot predict {self.fail_on!r}")
        return [text.upper() for text in texts]


def run_requests(model: CountingModel, requests: list[list[str]], **batcher_options):
    """Send every request at once through one batcher; results or exceptions, in order."""

    async def send_all():
        async with MicroBatcher(model.predict, **batcher_options) as batcher:
            return await asyncio.gather(
                *(batcher.predict(texts) for texts in requests), return_exceptions=True
            )

    return asyncio.run(send_all())


def test_concurrent_requests_share_model_calls():
    model = CountingModel()
    requests = [[f"text {i}"] for i in range(40)]
    results = run_requests(model, requests, max_batch=16)
    assert results == [[f"TEXT {i}"] for i in range(40)]
    assert len(model.batches) < len(requests)
    assert max(len(batch) for batch in model.batches) == 16
    assert sum(len(batch) for batch in model.batches) == 40
    # One worker thread ran every call, not the event loop's thread.
    assert len(model.threads) == 1 and threading.current_thread().name not in model.threads


def test_a_request_bigger_than_max_batch_is_split_and_stays_in_order():
    model = CountingModel(seconds=0)
    texts = [f"t{i}" for i in range(10)]
    (result,) = run_requests(model, [texts], max_batch=4)
    assert result == [text.upper() for text in texts]
    assert [len(batch) for batch in model.batches] == [4, 4, 2]


def test_a_model_error_reaches_only_the_requests_in_that_call():
    model = CountingModel(seconds=0)

    async def scenario():
        async with MicroBatcher(model.predict, max_batch=8) as batcher:
            failed = await asyncio.gather(
                batcher.predict(["good"]), batcher.predict(["bad"]), return_exceptions=True
            )
            after = await batcher.predict(["fine"])  # the worker survived the failure
            return failed, after, batcher.stats

    model.fail_on = "bad"
    failed, after, stats = asyncio.run(scenario())
    assert all(isinstance(err, ValueError) and "cannot predict 'bad'" in str(err) for err in failed)
    assert after == ["FINE"]
    assert (stats.failed_calls, stats.model_calls) == (1, 1)


def test_a_model_error_becomes_a_500_with_the_error_shape_and_the_app_keeps_serving():
    class FailingModel:
        task, labels = "classifier", list(FAKE_LABELS)

        def info(self):
            return {"task": self.task, "labels": self.labels}

        def predict(self, texts):
            if "boom" in texts:
                raise RuntimeError("the graph exploded")
            return [{"label": "neutral"} for _ in texts]

    app = create_app(FailingModel())

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                failed = await client.post("/predict", json={"texts": ["boom"]})
                after = await client.post("/predict", json={"texts": ["calm"]})
                return failed, after

    failed, after = asyncio.run(scenario())
    assert failed.status_code == 500
    assert "the graph exploded" in failed.json()["error"]
    assert after.status_code == 200 and after.json()["predictions"] == [{"label": "neutral"}]


# ---- the CLI ------------------------------------------------------------------------------------
def test_help_explains_every_option():
    result = CliRunner().invoke(load_script("14_serve").main, ["--help"])
    assert result.exit_code == 0
    for option in ("--export-dir", "--host", "--port", "--max-batch", "--max-texts",
                   "--max-chars", "--verbose"):  # fmt: skip
        assert option in result.output
    assert "127.0.0.1" in result.output


def test_a_directory_without_an_export_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(load_script("14_serve").main, ["--export-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "report.json not found" in result.output


# ---- the real server, in a subprocess ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``scripts/14_serve.py`` on a free loopback port, its log in a file."""

    def __init__(self, export_dir: Path, log_path: Path, *flags: str) -> None:
        self.command = [sys.executable, str(SERVE_SCRIPT), "--export-dir", str(export_dir), *flags]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, attempts: int = 3) -> ServerProcess:
        for _ in range(attempts):
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log_path.open("w", encoding="utf-8") as log:
                self.process = subprocess.Popen(
                    [*self.command, "--port", str(port)],
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # no terminal signals, no tty needed
                )
            if self._wait_until_healthy():
                return self
            if "address already in use" not in self.log().lower():
                break  # not a port collision: retrying would fail the same way
        self.stop()
        pytest.fail(f"the server did not start; its log:\n{self.log()[-5000:]}")

    def _wait_until_healthy(self) -> bool:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return False

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(classifier_export, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process = ServerProcess(classifier_export, log_path, "--max-texts", "4", "--max-chars", "100")
    try:
        yield process.start()
    finally:
        process.stop()


def test_healthz_describes_the_model(server):
    body = httpx.get(f"{server.url}/healthz").json()
    assert body["status"] == "ok"
    assert (body["task"], body["head"]) == ("classifier", "attention")
    assert body["labels"] == list(FAKE_LABELS)
    assert body["limits"] == {"max_batch": 32, "max_texts": 4, "max_chars": 100}


BAD_REQUESTS = [
    # (what, request keyword arguments, status, words the error must contain)
    ("not JSON", {"content": b"{texts", "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("not sent as JSON", {"content": b'{"texts": ["a"]}'}, 400, "Content-Type: application/json"),
    ("an array, not an object", {"json": ["a text"]}, 422, "must be a JSON object"),
    ("no texts", {"json": {"text": "a"}}, 422, 'no "texts"'),
    ("texts not a list", {"json": {"texts": "a text"}}, 422, "must be an array of strings"),
    ("an item not a string", {"json": {"texts": ["a", 7]}}, 422, "texts[1] must be a string"),
    ("empty list", {"json": {"texts": []}}, 422, '"texts" is empty'),
    ("too many texts", {"json": {"texts": ["a"] * 5}}, 413, "the limit is 4"),
    ("a text too long", {"json": {"texts": ["ok", "x" * 101]}}, 413, "texts[1] has 101 characters"),
    ("an unknown path", {"url": "/predictions"}, 404, "POST /predict"),
]  # fmt: skip


def test_the_json_api_answers_good_and_bad_requests_and_keeps_serving(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        good = client.post("/predict", json={"texts": ["one", "one two three four"]})
        assert good.status_code == 200
        body = good.json()
        assert (body["task"], body["labels"]) == ("classifier", list(FAKE_LABELS))
        assert [p["label"] for p in body["predictions"]] == ["neutral", "neutral"]
        assert body["predictions"][1]["tokens"] == ["one", "two", "three", "four"]

        for what, request, status, words in BAD_REQUESTS:
            options = {key: value for key, value in request.items() if key != "url"}
            answer = client.post(request.get("url", "/predict"), **options)
            assert answer.status_code == status, (what, answer.text)
            assert answer.headers["content-type"] == "application/json", what
            error = answer.json()
            assert list(error) == ["error"] and words in error["error"], (what, error)

        again = client.post("/predict", json={"texts": ["one two"]})
        assert again.status_code == 200
        assert again.json()["predictions"][0]["label"] == "positive"
    assert server.process.poll() is None


def test_500_requests_16_at_a_time_all_answered_correctly(server):
    texts = [" ".join(["word"] * (1 + i % 7)) for i in range(500)]
    before = httpx.get(f"{server.url}/healthz").json()["batching"]

    async def load():
        latencies, failures = [], []
        limit = asyncio.Semaphore(16)
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

            async def one(text):
                async with limit:
                    started = time.perf_counter()
                    try:
                        answer = await client.post("/predict", json={"texts": [text]})
                        label = answer.json()["predictions"][0]["label"]
                    except Exception as err:  # counted, not raised: the test reports them all
                        failures.append(f"{text!r}: {err!r}")
                        return
                    latencies.append(time.perf_counter() - started)
                    if answer.status_code != 200 or label != fake_label(text):
                        failures.append(f"{text!r}: {answer.status_code} {label}")

            await asyncio.gather(*(one(text) for text in texts))
        return latencies, failures

    started = time.perf_counter()
    latencies, failures = asyncio.run(load())
    seconds = time.perf_counter() - started
    assert not failures, failures[:10]
    percentiles = statistics.quantiles(latencies, n=100)
    after = httpx.get(f"{server.url}/healthz").json()["batching"]
    calls, served = after["model_calls"] - before["model_calls"], after["texts"] - before["texts"]
    summary = (
        f"500 requests, 16 concurrent: p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * percentiles[98]:.1f} ms, {500 / seconds:.0f} requests/s; "
        f"{served} texts in {calls} model calls"
    )
    logger.info(summary)
    print(summary)
    assert served == 500 and calls < served  # concurrent requests were batched


# ---- the page, in headless Chromium ------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if os.environ.get("ULMFIT_SKIP_BROWSER") == "1":
        pytest.skip("ULMFIT_SKIP_BROWSER=1: the page is not checked in a browser")
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: `make browser-deps` installs Debian's chromium "
            "and chromium-driver (or set ULMFIT_SKIP_BROWSER=1 to skip the page test)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    # A driver path given: Selenium Manager is not run, nothing is downloaded.
    service = Service(str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_predicts_and_shades_the_tokens(browser, server):  # browser first: it may skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = "the <b>page</b> must escape this"
    browser.get(f"{server.url}/")
    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "predict").click()
    label = WebDriverWait(browser, 10).until(
        lambda driver: driver.find_element(By.ID, "label").text
    )
    assert label == fake_label(text) == "positive"

    tokens = browser.find_elements(By.CSS_SELECTOR, "#tokens .token")
    assert [token.text for token in tokens] == text.split()  # shown as text, not as markup
    assert not browser.find_elements(By.CSS_SELECTOR, "#tokens b")
    weights = [float(token.get_attribute("data-weight")) for token in tokens]
    assert weights == pytest.approx([len(t) / len(text.replace(" ", "")) for t in text.split()])
    backgrounds = [token.value_of_css_property("background-color") for token in tokens]
    assert max(map(_alpha, backgrounds)) == pytest.approx(1.0), backgrounds
    rows = browser.find_elements(By.CSS_SELECTOR, "#probabilities tr")
    assert rows[0].get_attribute("data-label") == label  # most probable first
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None


def _alpha(css_color: str) -> float:
    """The opacity of a computed CSS colour: ``rgb(...)`` is 1, ``rgba(r, g, b, a)`` is a."""
    if css_color == "transparent":
        return 0.0
    channels = css_color[css_color.index("(") + 1 : -1].split(",")
    return float(channels[3]) if len(channels) == 4 else 1.0


# Last in the file, as it stops the module's server (the tests run in file order).
def test_the_server_logged_its_url_and_stops_cleanly_on_sigterm(server):
    server.stop()
    log = server.log()
    assert server.process.returncode == 0, log
    assert f"Uvicorn running on {server.url}" in log
    assert "server stopped" in log
