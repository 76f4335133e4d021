"""agilex_bridge (backend piper_ros) driving the simulated dual-Piper lab, both as their own processes with
config/sim_agilex.yaml and config/agilex.yaml: both arms track targets inside their workspaces, a target
outside is clamped and reported, when targets stop the arms hold, disable holds them."""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hybridvla_msgs.msg")
pytest.importorskip("mujoco")

from std_srvs.srv import SetBool  # noqa: E402

from hybridvla_msgs.msg import GuardEvent  # noqa: E402
from rosnodes import ROOT, Process, Spinner, wait_for  # noqa: E402
from test_agilex_bridge_dds import ARMS, Client  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
Z_MIN = 0.01  # m, config/agilex.yaml guards.<arm>.workspace_min[2]


def test_bridge_drives_the_simulated_pipers_through_their_guards(tmp_path):
    if not (ROOT / "config/sim_agilex.yaml").exists():
        pytest.skip("config/sim_agilex.yaml (the simulated dual-arm lab) is not there")
    spinner = Spinner()
    client = spinner.add(Client(spinner.context))
    spinner.start()
    sim = Process("hybridvla_ros.sim_lab_node", ROOT / "config/sim_agilex.yaml", log=tmp_path / "sim.log")
    bridge = Process("hybridvla_ros.agilex_bridge_node", ROOT / "config/agilex.yaml", log=tmp_path / "bridge.log")
    try:
        assert wait_for(lambda: all(client.states[a] for a in ARMS), timeout=90), sim.output() + bridge.output()
        response = spinner.enable(client, "/agilex_bridge/enable", timeout=30)
        assert response.success, response.message
        home = {a: client.pose(a)[0] for a in ARMS}
        goals = {"left": home["left"] + [0.03, 0.02, -0.02], "right": home["right"] + [0.03, -0.02, -0.02]}
        for _ in range(300):  # a 10 Hz policy until both arms are within 5 mm (the sim servos the joints)
            for arm in ARMS:
                client.send(arm, goals[arm], client.pose(arm)[1])
            if all(np.linalg.norm(client.pose(a)[0] - goals[a]) < 0.005 for a in ARMS):
                break
            wait_for(lambda: False, timeout=0.1)
        for arm in ARMS:
            assert np.linalg.norm(client.pose(arm)[0] - goals[arm]) < 0.005, (arm, client.pose(arm), bridge.output())

        tracked = since = len(client.events)
        below = goals["left"].copy()
        below[2] = -0.3  # into the table
        for _ in range(100):
            client.send("left", below, client.pose("left")[1])
            if abs(client.pose("left")[0][2] - Z_MIN) < 0.005:
                break
            wait_for(lambda: False, timeout=0.1)
        assert any(e.kind == GuardEvent.WORKSPACE_CLAMP and e.arm == "left" for e in client.events[since:])
        assert client.pose("left")[0][2] > Z_MIN - 0.005

        # The right arm, without targets since the tracking, held already; the left one holds now.
        assert wait_for(lambda: {e.arm for e in client.events[tracked:] if e.kind == GuardEvent.STALE_TARGET} == set(ARMS),
                        timeout=10)
        wait_for(lambda: False, timeout=0.5)
        held = {a: client.pose(a)[0] for a in ARMS}
        wait_for(lambda: False, timeout=1.0)
        for arm in ARMS:
            np.testing.assert_allclose(client.pose(arm)[0], held[arm], atol=2e-3)

        assert spinner.call(client, SetBool, "/agilex_bridge/enable", SetBool.Request(data=False)).success
        held = {a: client.pose(a)[0] for a in ARMS}
        for _ in range(15):
            client.send("right", held["right"] + [0.0, 0.0, 0.05], client.pose("right")[1])
            wait_for(lambda: False, timeout=0.1)
        np.testing.assert_allclose(client.pose("right")[0], held["right"], atol=3e-3)
        assert not any(client.states[a][-1].enabled for a in ARMS)
    finally:
        bridge.stop()
        sim.stop()
        spinner.close()
