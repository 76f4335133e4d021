"""The bridges' ROS-free decisions: guard parameters and franka_gripper goals."""
import pytest

from hybridvla_core.robots.arm_bridge import FrankaGripperCommander, GripperGoal, guard_config, guard_parameter_spec


def values(prefix="guards.", **changes):
    v = {name: default for name, (default, _, _) in guard_parameter_spec(prefix).items()}
    v.update({prefix + k: x for k, x in changes.items()})
    return v


def test_parameters_become_a_guard_config():
    config = guard_config("left", "piper", values("guards.left.", max_translation_step=0.02), "guards.left.")
    assert config.arm == "left" and config.model == "piper" and config.max_translation_step == 0.02
    assert config.workspace_min == (0.25, -0.45, 0.02)
    assert config.min_confidence == 0.0  # off unless a lab sets it
    assert guard_config("fr3", "fr3", values(min_confidence=0.4), "guards.").min_confidence == 0.4


def test_an_arm_target_keeps_its_confidence_on_the_way_to_the_guards():
    pytest.importorskip("rclpy")
    from hybridvla_msgs.msg import ArmTarget

    from hybridvla_ros.bridge_common import target_from_msg

    msg = ArmTarget(arm="fr3", gripper=0.25, confidence=0.375)
    msg.pose.position.x, msg.pose.orientation.w = 0.5, 1.0
    target = target_from_msg(msg)
    assert target.confidence == 0.375 and target.gripper == 0.25 and target.position[0] == 0.5


def test_every_default_passes_its_own_check():
    for name, (default, check, _) in guard_parameter_spec("g.").items():
        assert check(default), name


def test_an_inconsistent_combination_names_the_parameter():
    with pytest.raises(ValueError, match="parameter 'guards.right.gripper_max'"):
        guard_config("right", "piper", values("guards.right.", gripper_min=0.8, gripper_max=0.2), "guards.right.")


def test_gripper_goals_go_out_once_per_change():
    g = FrankaGripperCommander(max_width=0.08, close_below=0.5, resend_width=0.005)
    assert g.decide(1.0) == GripperGoal("move", 0.08)
    assert g.decide(0.98) is None                      # 1.6 mm narrower: same goal
    assert g.decide(0.2) == GripperGoal("grasp", 0.0)
    assert g.decide(0.0) is None                       # still closing
    assert g.decide(0.6) == GripperGoal("move", 0.048)
    assert g.decide(1.7) == GripperGoal("move", 0.08)  # clamped to max_width


def test_a_goal_the_server_never_took_is_retried():
    g = FrankaGripperCommander()
    goal = g.decide(0.0)
    g.not_accepted(goal)
    assert g.decide(0.0) == goal


def test_after_forget_an_unchanged_command_goes_out_again():
    g = FrankaGripperCommander()
    assert g.decide(0.0) == GripperGoal("grasp", 0.0)
    g.forget()  # on enable: the fingers may have moved meanwhile
    assert g.decide(0.0) == GripperGoal("grasp", 0.0)
    assert g.decide(0.0) is None


def test_bad_gripper_settings_are_refused():
    with pytest.raises(ValueError, match="max_width"):
        FrankaGripperCommander(max_width=0.2)
