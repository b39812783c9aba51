"""Shared fixtures: real servers on free loopback ports, the PYME fixtures, a scratch data root."""
from __future__ import annotations

import os
import pathlib
import shutil

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _private_name_service(tmp_path_factory, monkeypatch):
    """Tests never see (or leave) clusters in this machine's PYME local name service."""
    monkeypatch.setenv("PYME_NAMESERVICE_DIR", str(tmp_path_factory.mktemp("nameservice")))

REPO = pathlib.Path(__file__).resolve().parents[1]
@pytest.fixture(scope="session", autouse=True)
def _compiled_localisation():
    """The localiser's numba-compiled loops, compiled (once per checkout, ~10 s) or loaded from
    the on-disk cache before any test, so no worker process of a test spends its first task
    compiling them."""
    from cluster.localisation import preload

    preload()


#: Files written by PYME itself, copied byte for byte from ``../shared/fixtures/pyme`` (its README
#: describes them) so that the suite stands on its own in a clone.
PYME_FIXTURES = REPO / "tests" / "fixtures" / "pyme"


@pytest.fixture(scope="session")
def pyme_fixtures() -> pathlib.Path:
    """``tests/fixtures/pyme``: series, PZF codec cases and a results file written by PYME itself."""
    return PYME_FIXTURES


@pytest.fixture
def data_root(tmp_path) -> pathlib.Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def rule_server():
    """A rule server on a free loopback port (short task timeout for tests)."""
    from cluster.ruleserver import RuleServer
    server = RuleServer(bind="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def data_server(data_root):
    """A data server over an empty scratch root on a free loopback port."""
    from cluster.dataserver import DataServer
    server = DataServer(root=data_root, bind="127.0.0.1", port=0, serverfilter="testcluster")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fixture_series_root(data_root, pyme_fixtures) -> pathlib.Path:
    """Data root holding PYME's fixture series as ``pyme/series.pcs`` and its results file."""
    shutil.copytree(pyme_fixtures / "series.pcs", data_root / "pyme" / "series.pcs")
    shutil.copy(pyme_fixtures / "results.h5r", data_root / "pyme" / "results.h5r")
    return data_root


def _is_gui_test(request) -> bool:
    return request.node.module.__name__.rsplit(".", 1)[-1].startswith("test_gui_")


def _refuse_modal_dialogs(monkeypatch) -> None:
    """A modal dialog would block an offscreen run for good (no one clicks it, and the test timeout
    cannot interrupt Qt's own event loop): each one fails the test instead, naming itself. Tests that
    expect a dialog monkeypatch it themselves."""
    from PyQt5.QtWidgets import QDialog, QFileDialog, QInputDialog, QMessageBox

    def refuse(name):
        def modal(*args, **kwargs):
            raise AssertionError(f"{name} would open a modal dialog and block the offscreen run; "
                                 "monkeypatch it in the test")
        return staticmethod(modal)

    statics = {QMessageBox: ("information", "warning", "critical", "question", "about"),
               QFileDialog: ("getOpenFileName", "getOpenFileNames", "getSaveFileName",
                             "getExistingDirectory"),
               QInputDialog: ("getText", "getInt", "getDouble", "getItem")}
    for cls, names in statics.items():
        for name in names:
            monkeypatch.setattr(cls, name, refuse(f"{cls.__name__}.{name}"))
    for cls in (QDialog, QMessageBox, QFileDialog, QInputDialog):
        monkeypatch.setattr(cls, "exec_", lambda self, _n=cls.__name__: refuse(f"{_n}.exec_").__func__())


@pytest.fixture(autouse=True)
def _gui_teardown(request, monkeypatch):
    """GUI tests leave nothing behind: every top-level widget is closed and deleted now (not by a
    garbage collection during a later test, which once crashed in pyqtgraph's ImageView), and a
    QThread the test started that is still running fails the test."""
    if not _is_gui_test(request):
        yield
        return
    import gc

    from PyQt5 import sip
    from PyQt5.QtCore import QCoreApplication, QEvent, QThread
    from PyQt5.QtWidgets import QApplication

    _refuse_modal_dialogs(monkeypatch)
    started: list[QThread] = []
    original_start = QThread.start

    def start(thread, *args):
        started.append(thread)
        return original_start(thread, *args)
    monkeypatch.setattr(QThread, "start", start)
    yield
    app = QApplication.instance()
    if app is not None:
        for widget in app.topLevelWidgets():
            if not sip.isdeleted(widget):
                widget.close()
                widget.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        app.processEvents()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    gc.collect()
    running = []
    for thread in started:
        if sip.isdeleted(thread):
            continue
        # A thread asked to quit during teardown may need a moment to get there.
        if thread.isRunning() and not thread.wait(5000):
            running.append(thread.objectName() or type(thread).__name__)
    assert not running, f"QThread(s) still running after the test: {running}"


@pytest.fixture
def cluster(fixture_series_root, rule_server, data_server):
    """An engine ``rules.Cluster`` on the embedded servers, whose root holds PYME's fixture series."""
    from rules import Cluster
    c = Cluster(rule_server.url, data_server.url, serverfilter="testcluster")
    yield c
    c.close()


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """An embedded cluster with one real worker process (cluster name ``e2e``), one per module."""
    from cluster.local import start_local_cluster
    root = tmp_path_factory.mktemp("cluster")
    with start_local_cluster(root, workers=1, serverfilter="e2e", task_timeout=60) as lc:
        yield lc


@pytest.fixture
def engine(local_cluster):
    """An engine ``rules.Cluster`` on :func:`local_cluster`."""
    from rules import Cluster
    with Cluster(local_cluster.ruleserver_url, local_cluster.dataserver_url,
                 serverfilter=local_cluster.serverfilter) as c:
        yield c


@pytest.fixture
def window(qtbot, tmp_path):
    """A main window with settings and config in ``tmp_path``, shut down and deleted after."""
    from PyQt5.QtCore import QCoreApplication, QEvent, QSettings

    from app.main_window import MainWindow
    win = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), tmp_path / "config")
    qtbot.addWidget(win)
    yield win
    win.ask_before_closing = False
    win.close()
    win.shutdown()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
