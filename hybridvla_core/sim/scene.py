"""The simulated lab's MuJoCo scenes, generated in code: robots from urdf/*.urdf (through sim.mjcf), a table,
the task's objects and the cameras.

World frame: z up, the table top at z = 0. The FR3 base (fr3_link0) is the world origin, so targets in
fr3_link0 are world coordinates; the two Piper bases sit where urdf/dual_piper.urdf mounts them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridvla_core.resources import resource_path
from hybridvla_core.sim.mjcf import BodyOptions, urdf_to_mjcf

TABLE_HEIGHT = 0.75  # m, floor below the table top


@dataclass(frozen=True)
class ArmSpec:
    """One simulated arm and how it maps onto its URDF and its kinematics (hybridvla_core.runtime.kinematics.ARMS)."""
    name: str                       # arm name in messages: "fr3", "left", "right"
    kinematics: str                 # key of hybridvla_core.runtime.kinematics.ARMS
    urdf: str                       # file in urdf/
    root_link: str                  # the arm's base link = frame of its targets and poses
    tcp_link: str
    finger_joints: tuple[str, str]  # prismatic, m, each 0..finger_max (their sum is the gripper width)
    finger_max: float               # m per finger
    home: tuple[float, ...]         # rad, the reset configuration
    grip_force: float               # N, default force limit of the gripper actuator (per finger)
    joint_kp: tuple[float, float]   # N m/rad of the joint servos: (joints with effort > 50 N m, the others)
    collide_links: tuple[str, ...]  # hand and fingers: the links that touch objects
    finger_links: tuple[str, ...]


FR3 = ArmSpec(
    name="fr3", kinematics="fr3", urdf="fr3.urdf", root_link="fr3_link0", tcp_link="fr3_hand_tcp",
    finger_joints=("fr3_finger_joint1", "fr3_finger_joint2"), finger_max=0.04,
    home=(0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4),  # franka "ready"
    grip_force=40.0,
    joint_kp=(3000.0, 800.0),
    collide_links=("fr3_hand", "fr3_leftfinger", "fr3_rightfinger"),
    finger_links=("fr3_leftfinger", "fr3_rightfinger"),
)


def piper_arm(side: str) -> ArmSpec:
    return ArmSpec(
        name=side, kinematics=f"piper_{side}", urdf="dual_piper.urdf", root_link=f"{side}_base_link",
        tcp_link=f"{side}_tcp", finger_joints=(f"{side}_joint7", f"{side}_joint8"), finger_max=0.035,
        home=(0.0, 1.2, -1.2, 0.0, 0.9, 0.0),  # rad: tool forward and down, clear of the table
        grip_force=10.0,
        joint_kp=(600.0, 600.0),  # a small arm: soft enough that squeezing an object stays gentle
        collide_links=(f"{side}_gripper_base", f"{side}_link7", f"{side}_link8", f"{side}_link6"),
        finger_links=(f"{side}_link7", f"{side}_link8"),
    )


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the scene; `name` is the view name in topics (/camera/<name>/color/...)."""
    name: str
    body: str | None                # None: fixed in the world; else the body it is mounted on
    pos: tuple[float, float, float]  # m, in the world or the body frame
    look_at: tuple[float, float, float]  # m, a point the optical axis passes through, same frame
    up: tuple[float, float, float]  # a direction that appears upward in the image, same frame
    fovy: float                     # deg, vertical field of view


def _xyaxes(pos, look_at, up) -> str:
    """MJCF camera xyaxes: MuJoCo cameras look along their -z with +y up in the image."""
    forward = np.asarray(look_at, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    image_up = np.cross(right, forward)
    return " ".join(f"{v:.6g}" for v in np.concatenate([right, image_up]))


def camera_xml(cam: CameraSpec) -> str:
    return (f'<camera name="{cam.name}" pos="{" ".join(map(str, cam.pos))}" '
            f'xyaxes="{_xyaxes(cam.pos, cam.look_at, cam.up)}" fovy="{cam.fovy}"/>')


def arm_bodies(arm: ArmSpec):
    return urdf_to_mjcf(
        resource_path("urdf", arm.urdf), arm.root_link,
        BodyOptions(collide_links=arm.collide_links, sites=(arm.tcp_link,),
                    # Rubber finger pads: high sliding and some torsional friction so a block does not spin.
                    link_friction={link: "1.5 0.02 0.0001" for link in arm.finger_links}),
    )


def arm_actuators_xml(arm: ArmSpec, joints: list[str], efforts: dict[str, float]) -> tuple[str, str]:
    """(tendon xml, actuator xml): a stiff joint position servo per arm joint (the arm's own joint
    controller), and one position servo on the fingers' mean opening with a force limit (the gripper)."""
    arm_joints = [j for j in joints if j not in arm.finger_joints]
    acts = []
    for j in arm_joints:
        effort = efforts.get(j, 87.0)
        kp = arm.joint_kp[0] if effort > 50 else arm.joint_kp[1]
        acts.append(f'<general name="{j}" joint="{j}" gainprm="{kp}" biastype="affine" biasprm="0 {-kp} {-kp / 10}" '
                    f'forcelimited="true" forcerange="{-effort} {effort}"/>')
    j1, j2 = arm.finger_joints
    tendon = (f'<fixed name="{arm.name}_gripper"><joint joint="{j1}" coef="0.5"/><joint joint="{j2}" coef="0.5"/></fixed>')
    # ctrl = opening per finger [m]; the tendon force is twice the force per finger.
    kp = 2000.0
    acts.append(f'<general name="{arm.name}_gripper" tendon="{arm.name}_gripper" ctrllimited="true" '
                f'ctrlrange="0 {arm.finger_max}" gainprm="{kp}" biastype="affine" biasprm="0 {-kp} -40" '
                f'forcelimited="true" forcerange="{-2 * arm.grip_force} {2 * arm.grip_force}"/>')
    return tendon, "\n".join(acts)


def build_mjcf(arms: list[ArmSpec], cameras: list[CameraSpec], objects_xml: str, *, physics_rate_hz: float,
               image_width: int, image_height: int) -> str:
    """The whole scene as an MJCF string."""
    bodies, equalities, tendons, actuators, excludes = [], [], [], [], []
    for arm in arms:
        b = arm_bodies(arm)
        bodies.append(b.xml)
        equalities.append(b.equality_xml)
        excludes += b.contact_excludes
        tendon, acts = arm_actuators_xml(arm, b.joints, b.joint_efforts)
        tendons.append(tendon)
        actuators.append(acts)
    world_cams = "\n".join(camera_xml(c) for c in cameras if c.body is None)
    # Cameras on robot bodies are inserted into those bodies after generation.
    robot_xml = "\n".join(bodies)
    for cam in (c for c in cameras if c.body is not None):
        marker = f'<body name="{cam.body}" '
        start = robot_xml.index(marker)
        end = robot_xml.index(">", start) + 1
        robot_xml = robot_xml[:end] + "\n" + camera_xml(cam) + robot_xml[end:]
    exclude_xml = "\n".join(f'<exclude body1="{a}" body2="{b}"/>' for a, b in excludes)
    return f"""<mujoco model="hybridvla_lab">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{1.0 / physics_rate_hz:.9g}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality offsamples="0" shadowsize="0"/>
    <global offwidth="{max(image_width, 64)}" offheight="{max(image_height, 64)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/>
  </visual>
  <default><geom solref="0.004 1" solimp="0.95 0.99 0.001"/></default>
  <worldbody>
    <light pos="0.4 0 1.6" dir="0 0 -1" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" size="4 4 0.1" pos="0 0 {-TABLE_HEIGHT}" rgba="0.35 0.35 0.38 1"/>
    <geom name="table" type="box" size="0.75 0.8 0.02" pos="0.45 0 -0.02" rgba="0.62 0.5 0.38 1" friction="0.8 0.005 0.0001"/>
    {world_cams}
    {robot_xml}
    {objects_xml}
  </worldbody>
  <contact>{exclude_xml}</contact>
  <equality>{"".join(equalities)}</equality>
  <tendon>{"".join(tendons)}</tendon>
  <actuator>{"".join(actuators)}</actuator>
</mujoco>"""
