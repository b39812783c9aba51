"""The rule table model and view: in-place updates, launch grouping, selection, abort."""
from __future__ import annotations

import dataclasses

from PyQt5.QtCore import QEvent, QModelIndex, QObject, Qt

from rules.watchers import RuleStatus
from widgets.progress_delegate import PROGRESS_ROLE
from widgets.rule_table import RAW_ROLE, RuleLabel, RuleTableModel, RuleTableView


def _status(rule_id: str, **changes) -> RuleStatus:
    fields = dict(rule_id=rule_id, posted=10, running=2, completed=3, failed=0, timed_out=0,
                  complete_after_timeout=0, average_cost=0.01, active=True, finished=False,
                  expired=False, parent_id=None)
    fields.update(changes)
    return RuleStatus(**fields)


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:06d}-{i:032x}" for i in range(start, start + n)]


def _column(model: RuleTableModel, key: str) -> int:
    return [k for k, _ in model.COLUMNS].index(key)


def _cell(model, row: int, key: str, role=Qt.DisplayRole):
    return model.index(row, _column(model, key)).data(role)


def _shown_view(qtbot, width=None, height=None):
    """A rule table view over a fresh model, shown (at ``width`` × ``height`` when given)."""
    model = RuleTableModel()
    view = RuleTableView(model, confirm_abort=False)
    qtbot.addWidget(view)
    if width:
        view.resize(width, height)
    view.show()
    return model, view


def test_model_passes_qt_checks(qtmodeltester):
    model = RuleTableModel()
    ids = _ids(3)
    model.set_rule_labels({ids[0]: RuleLabel("launch 1", "localisation", "s/a.pcs", ("render",))})
    model.set_statuses([_status(ids[0], finished=True, completed=10, running=0),
                        _status(ids[1], parent_id=ids[0], failed=2),
                        _status(ids[2], active=False)])
    qtmodeltester.check(model)
    model.set_statuses([_status(ids[0], finished=True, completed=10, running=0)])  # two vanish
    model.set_reachable(False)
    qtmodeltester.check(model)


def test_cells_show_counts_progress_and_state():
    model = RuleTableModel()
    rule_id = _ids(1)[0]
    model.set_rule_labels({rule_id: ("launch 1", "localisation", "s/a.pcs")})
    model.set_statuses([_status(rule_id, posted=20, completed=9, failed=1, timed_out=2)])
    assert _cell(model, 0, "rule_id") == rule_id[:11]
    assert _cell(model, 0, "rule_id", RAW_ROLE) == rule_id
    assert [_cell(model, 0, k) for k in ("launch", "step", "series")] == \
        ["launch 1", "localisation", "s/a.pcs"]
    assert [_cell(model, 0, k, RAW_ROLE) for k in ("posted", "completed", "failed", "timed_out")] \
        == [20, 9, 1, 2]
    assert _cell(model, 0, "progress", PROGRESS_ROLE) == 0.5
    assert _cell(model, 0, "progress") == "10/20"
    assert _cell(model, 0, "state") == "running"
    model.set_statuses([_status(rule_id, posted=20, completed=20, failed=0, running=0,
                                finished=True)])
    assert _cell(model, 0, "progress", PROGRESS_ROLE) == 1.0
    assert _cell(model, 0, "state") == "finished"


def test_only_changed_rows_emit_data_changed(qtbot):
    model = RuleTableModel()
    ids = _ids(50)
    statuses = [_status(i) for i in ids]
    model.set_statuses(statuses)
    emitted = []
    model.dataChanged.connect(lambda tl, br, roles=(): emitted.append((tl.row(), br.row())))
    resets = []
    model.modelReset.connect(lambda: resets.append(1))

    model.set_statuses([dataclasses.replace(s) for s in statuses])  # equal values
    assert emitted == []

    changed = list(statuses)
    for row in (3, 17, 18, 40):
        changed[row] = dataclasses.replace(statuses[row], completed=statuses[row].completed + 1)
    model.set_statuses(changed)
    assert emitted == [(3, 3), (17, 18), (40, 40)]
    assert _cell(model, 17, "completed", RAW_ROLE) == 4
    assert resets == []


def test_new_rules_are_inserted_and_vanished_rules_kept(qtbot):
    model = RuleTableModel()
    ids = _ids(4)
    model.set_statuses([_status(ids[0]), _status(ids[1])])
    inserted = []
    model.rowsInserted.connect(lambda parent, first, last: inserted.append((first, last)))
    model.set_statuses([_status(ids[0], finished=True, completed=10, running=0),
                        _status(ids[2]), _status(ids[3])])
    assert inserted == [(2, 3)]
    assert model.rule_ids() == ids
    # ids[1] was running when the server dropped it: it expired there; ids[0] stays finished.
    assert model.is_gone(ids[1]) and model.rule_state(ids[1]) == "expired"
    model.set_statuses([_status(ids[2]), _status(ids[3])])
    assert model.rowCount() == 4
    assert model.is_gone(ids[0]) and model.rule_state(ids[0]) == "finished"
    assert model.index(0, 0).data(Qt.ForegroundRole) is not None  # greyed
    assert not model.can_abort(ids[0])
    model.set_statuses([_status(ids[1]), _status(ids[2]), _status(ids[3])])  # back again
    assert not model.is_gone(ids[1]) and model.rule_state(ids[1]) == "running"


def test_follow_on_rules_appear_under_their_launch():
    model = RuleTableModel()
    a1, b1, a2, a3 = _ids(4)
    model.set_rule_labels({a1: RuleLabel("launch A", "localisation", "s/a.pcs", ("render",)),
                           b1: RuleLabel("launch B", "localisation", "s/b.pcs")})
    model.set_statuses([_status(a1), _status(b1)])
    model.set_statuses([_status(a1, finished=True), _status(b1),
                        _status(a2, parent_id=a1)])
    assert model.rule_ids() == [a1, a2, b1]
    assert [_cell(model, 1, k) for k in ("launch", "step", "series")] == \
        ["launch A", "render", "s/a.pcs"]
    model.set_statuses([_status(a1, finished=True), _status(b1), _status(a2, parent_id=a1),
                        _status(a3, parent_id=a2)])
    assert model.rule_ids() == [a1, a2, a3, b1]
    assert _cell(model, 2, "step") == "follow-on"
    # A poll without parent links (extra info failed once) keeps the rows where they are.
    model.set_statuses([_status(a1, finished=True), _status(b1), _status(a2), _status(a3)])
    assert model.rule_ids() == [a1, a2, a3, b1]
    assert model.status(a3).parent_id == a2


def test_labels_arriving_late_regroup_rows_and_keep_selection(qtbot):
    model = RuleTableModel()
    view = RuleTableView(model, confirm_abort=False)
    qtbot.addWidget(view)
    a1, b1, a2 = _ids(3)
    model.set_statuses([_status(a1), _status(b1), _status(a2)])
    view.select_rules([a2])
    model.set_rule_labels({a1: ("A", "localisation", "s/a.pcs"), b1: ("B", "localisation", "s/b.pcs"),
                           a2: ("A", "render", "s/a.pcs")})
    assert model.rule_ids() == [a1, a2, b1]
    assert view.selected_rule_ids() == [a2]


def test_view_selection_survives_updates_and_abort_emits_rule_id(qtbot):
    model, view = _shown_view(qtbot, 900, 300)
    ids = _ids(10)
    model.set_statuses([_status(i) for i in ids])
    with qtbot.waitSignal(view.selectionChangedTo) as blocker:
        view.select_rules([ids[2], ids[5]])
    assert blocker.args == [[ids[2], ids[5]]]
    for step in range(3):
        model.set_statuses([_status(i, completed=3 + step) for i in ids] + [_status(f"extra-{step}")])
    assert view.selected_rule_ids() == [ids[2], ids[5]]
    assert view.abort_action.isEnabled()
    requested = []
    view.abortRequested.connect(requested.append)
    view.abort_action.trigger()
    assert requested == [ids[2], ids[5]]

    view.select_rules([ids[1]])
    model.set_statuses([_status(i, finished=True) for i in ids])
    assert not view.abort_action.isEnabled()


def test_unreachable_banner_and_recovery(qtbot):
    model, view = _shown_view(qtbot)
    model.set_statuses([_status(_ids(1)[0])])
    view.set_reachable(False, "connection refused")
    assert view.banner.isVisible() and "connection refused" in view.banner.text()
    assert model.index(0, 0).data(Qt.ForegroundRole) is not None
    view.set_reachable(True)
    assert not view.banner.isVisible()
    assert model.index(0, 0).data(Qt.ForegroundRole) is None


def test_empty_model_has_no_children_under_items():
    model = RuleTableModel()
    model.set_statuses([_status("r1")])
    assert model.rowCount(model.index(0, 0)) == 0
    assert model.rowCount(QModelIndex()) == 1


class _PaintRegions(QObject):
    def __init__(self):
        super().__init__()
        self.regions = []

    def eventFilter(self, obj, event):  # noqa: N802 - Qt override
        if event.type() == QEvent.Paint:
            self.regions.append(event.region().boundingRect())
        return False


def test_view_repaints_only_the_changed_row(qtbot):
    model, view = _shown_view(qtbot, 900, 400)
    qtbot.waitExposed(view)
    ids = _ids(200)
    statuses = [_status(i) for i in ids]
    model.set_statuses(statuses)
    qtbot.wait(50)
    paints = _PaintRegions()
    view.table.viewport().installEventFilter(paints)
    statuses[4] = dataclasses.replace(statuses[4], completed=9)
    statuses[150] = dataclasses.replace(statuses[150], completed=9)  # scrolled out of view
    model.set_statuses(statuses)
    qtbot.waitUntil(lambda: bool(paints.regions), timeout=5000)
    row_height = view.table.rowHeight(4)
    painted = paints.regions[0]
    assert painted.top() == view.table.rowViewportPosition(4)
    assert painted.height() == row_height
    assert painted.width() == view.table.viewport().width()


def test_every_header_has_a_tooltip_and_columns_fit_by_default(qtbot):
    model, view = _shown_view(qtbot, 820, 300)
    header = view.table.horizontalHeader()
    for column, (key, _label) in enumerate(model.COLUMNS):
        assert model.headerData(column, Qt.Horizontal, Qt.ToolTipRole), key
    hidden = {key for column, (key, _) in enumerate(model.COLUMNS)
              if header.isSectionHidden(column)}
    assert hidden == set(view.HIDDEN_BY_DEFAULT)
    # Every count a user needs is on screen: the visible columns fit without a horizontal scroll.
    visible = [c for c in range(model.columnCount()) if not header.isSectionHidden(c)]
    qtbot.waitUntil(lambda: sum(header.sectionSize(c) for c in visible)
                    <= view.table.viewport().width() + 1, timeout=2000)
    view.column_actions["timed_out"].setChecked(True)
    assert not header.isSectionHidden(_column(model, "timed_out"))


def test_failed_progress_is_red_and_tooltip_has_hidden_counts():
    model = RuleTableModel()
    ok, bad = _ids(2)
    model.set_statuses([_status(ok), _status(bad, failed=2, timed_out=1)])
    colour_role = Qt.UserRole + 11
    from widgets.progress_delegate import PROGRESS_COLOUR_ROLE
    assert PROGRESS_COLOUR_ROLE == colour_role
    assert _cell(model, 0, "progress", colour_role) is None
    assert _cell(model, 1, "progress", colour_role).red() > 150
    tip = _cell(model, 1, "state", Qt.ToolTipRole)
    assert bad in tip and "1 timed out" in tip and "average cost 0.01" in tip


def test_legend_name_uses_launch_and_step():
    model = RuleTableModel()
    first, follow, other = _ids(3)
    model.set_rule_labels({first: RuleLabel("#1 20:12", "Localise", "a.pcs", ("render image",))})
    model.set_statuses([_status(first), _status(follow, parent_id=first), _status(other)])
    assert model.legend_name(first) == "#1 Localise"
    assert model.legend_name(follow) == "#1 render image"
    assert model.legend_name(other) == other[:11]


def test_a_finished_rule_stays_finished_when_its_retention_runs_out():
    model = RuleTableModel()
    model.set_statuses([_status("a", finished=True, expired=True)])
    assert _cell(model, 0, "state") == "finished"
    model.set_statuses([])  # then dropped by the server
    assert _cell(model, 0, "state") == "finished"


def test_live_progress_is_against_the_frames_expected_or_marked_spooling():
    model = RuleTableModel()
    model.set_statuses([_status("a", posted=71, completed=58, running=3, finished=False)])
    model.set_live({"a": 500})
    assert _cell(model, 0, "progress") == "58/500"
    assert abs(_cell(model, 0, "progress", RAW_ROLE) - 58 / 500) < 1e-9
    model.set_live({"a": None})
    assert _cell(model, 0, "progress") == "58/71 spooling"
    model.set_live({})  # release complete: posted is the total now
    assert _cell(model, 0, "progress") == "58/71"


def test_root_of_follows_parents():
    model = RuleTableModel()
    model.set_statuses([_status("a"), _status("b", parent_id="a"), _status("c", parent_id="b")])
    assert model.root_of("c") == "a" and model.root_of("a") == "a" and model.root_of("x") == "x"


def test_re_run_failed_tasks_needs_failures_and_a_server_that_can(qtbot):
    model, view = _shown_view(qtbot)
    model.set_statuses([_status("a", failed=2, finished=True), _status("b", failed=0)])
    view.set_requeue_available("this rule server (PYME) cannot re-run failed tasks")
    view.select_rules(["a"])
    assert not view.requeue_action.isEnabled() and "PYME" in view.requeue_action.toolTip()
    view.set_requeue_available(None)
    assert view.requeue_action.isEnabled()
    with qtbot.waitSignal(view.requeueRequested) as blocker:
        view.requeue_action.trigger()
    assert blocker.args == ["a"]
    view.select_rules(["b"])
    assert not view.requeue_action.isEnabled()


def test_a_step_on_a_partial_input_says_so():
    model = RuleTableModel()
    model.set_statuses([_status(_ids(1)[0]),
                        _status(_ids(2)[1], parent_id=_ids(1)[0], failed_upstream=121)])
    assert _cell(model, 0, "state") == "running"
    assert _cell(model, 1, "state") == "running (partial input)"
    assert _cell(model, 1, "state", RAW_ROLE) == "running"
    assert "Partial input: 121 tasks of the earlier steps failed" in \
        _cell(model, 1, "state", Qt.ToolTipRole)
