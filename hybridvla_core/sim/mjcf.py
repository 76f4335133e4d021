"""URDF -> MJCF body tree, so that the simulated arms have exactly the kinematics of urdf/*.urdf (the same
files hybridvla_core.runtime.kinematics reads for the guards).

Only what the suite's URDFs use is translated: revolute/prismatic/continuous/fixed joints, box/cylinder/sphere
collision geometry (used for display too), inertials and <mimic> (as an equality constraint). Mesh geometry
is skipped: the suite's URDFs are simple-geometry models. Units: metres, radians, kilograms.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

# MuJoCo refuses moving bodies whose mass or inertia is below its epsilon (the FR3 fingers declare 0).
_MIN_INERTIA = 1e-6


def _floats(text: str | None, default: str = "0 0 0") -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()])


def _fmt(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in np.atleast_1d(values))


def _origin(el: ET.Element | None) -> tuple[np.ndarray, np.ndarray]:
    """(pos, quat wxyz) of a URDF <origin> (rpy = fixed-axis roll, pitch, yaw)."""
    if el is None or el.find("origin") is None:
        return np.zeros(3), np.array([1.0, 0, 0, 0])
    o = el.find("origin")
    xyzw = Rotation.from_euler("xyz", _floats(o.get("rpy"))).as_quat()
    return _floats(o.get("xyz")), np.roll(xyzw, 1)


@dataclass
class BodyOptions:
    """How the robot bodies are simulated; the URDF gives kinematics, geometry and inertia."""
    prefix: str = ""                                   # prepended to every body/joint/geom/site name
    collide_links: tuple[str, ...] = ()                # links whose geoms collide (the rest are visual only)
    link_friction: dict[str, str] = field(default_factory=dict)  # link -> MJCF friction "slide torsion roll"
    joint_armature: float = 0.1                        # kg m^2 (kg for prismatic): reflected rotor inertia
    joint_damping: float = 1.0                         # N m s/rad (N s/m)
    sites: tuple[str, ...] = ()                        # links that get a site at their origin (e.g. the TCP)


@dataclass
class UrdfBodies:
    """The MJCF produced for one URDF: the body tree XML and what the scene needs to know about it."""
    xml: str                                           # <body ...> element(s) to put under <worldbody>
    equality_xml: str                                  # <joint .../> constraints for mimic joints
    joints: list[str]                                  # movable joint names (with prefix), in tree order
    joint_ranges: dict[str, tuple[float, float]]       # joint -> (lower, upper), rad or m
    joint_efforts: dict[str, float]                    # joint -> effort limit, N m or N
    contact_excludes: list[tuple[str, str]]            # sibling bodies that must not collide (e.g. two fingers)


def urdf_to_mjcf(path: str | Path, root_link: str, options: BodyOptions) -> UrdfBodies:
    """Translate the tree below root_link (included) into nested MJCF bodies, gravity-compensated (the real
    arms' controllers compensate gravity too)."""
    root = ET.parse(path).getroot()
    links = {ln.get("name"): ln for ln in root.findall("link")}
    materials = {m.get("name"): m.find("color").get("rgba") for m in root.findall("material") if m.find("color") is not None}
    children: dict[str, list[ET.Element]] = {}
    for j in root.findall("joint"):
        children.setdefault(j.find("parent").get("link"), []).append(j)
    pre = options.prefix
    joints: list[str] = []
    ranges: dict[str, tuple[float, float]] = {}
    efforts: dict[str, float] = {}
    equalities: list[str] = []
    excludes: list[tuple[str, str]] = []

    def link_contents(name: str, indent: str) -> list[str]:
        link = links[name]
        out = []
        inertial = link.find("inertial")
        if inertial is not None:
            pos, quat = _origin(inertial)
            mass = max(float(inertial.find("mass").get("value")), _MIN_INERTIA)
            I = inertial.find("inertia")
            diag = [max(float(I.get(k, 0.0)), _MIN_INERTIA) for k in ("ixx", "iyy", "izz")]
            out.append(f'{indent}<inertial pos="{_fmt(pos)}" quat="{_fmt(quat)}" mass="{mass:.9g}" '
                       f'diaginertia="{_fmt(diag)}"/>')
        collide = name in options.collide_links
        for i, col in enumerate(link.findall("collision")):
            geom = col.find("geometry")
            pos, quat = _origin(col)
            if geom.find("box") is not None:
                shape = f'type="box" size="{_fmt(_floats(geom.find("box").get("size")) / 2)}"'
            elif geom.find("cylinder") is not None:
                c = geom.find("cylinder")
                shape = f'type="cylinder" size="{float(c.get("radius")):.9g} {float(c.get("length")) / 2:.9g}"'
            elif geom.find("sphere") is not None:
                shape = f'type="sphere" size="{float(geom.find("sphere").get("radius")):.9g}"'
            else:
                continue  # meshes: not used by the suite's URDFs
            rgba = "0.85 0.85 0.85 1"
            material = link.find("visual/material")
            if material is not None:
                color = material.find("color")
                rgba = color.get("rgba") if color is not None else materials.get(material.get("name"), rgba)
            contact = (f'contype="1" conaffinity="1" condim="4" friction="{options.link_friction.get(name, "1 0.005 0.0001")}"'
                       if collide else 'contype="0" conaffinity="0"')
            out.append(f'{indent}<geom name="{pre}{name}_geom{i}" {shape} pos="{_fmt(pos)}" quat="{_fmt(quat)}" '
                       f'rgba="{rgba}" {contact}/>')
        if name in options.sites:
            out.append(f'{indent}<site name="{pre}{name}" size="0.005" rgba="1 0 0 0"/>')
        for j in children.get(name, []):
            out.extend(joint_body(j, indent))
        return out

    def joint_body(j: ET.Element, indent: str) -> list[str]:
        child = j.find("child").get("link")
        kind = j.get("type")
        pos, quat = _origin(j)
        out = [f'{indent}<body name="{pre}{child}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">']
        if kind in ("revolute", "prismatic", "continuous"):
            jname = pre + j.get("name")
            axis = _floats(j.find("axis").get("xyz") if j.find("axis") is not None else None, "1 0 0")
            limit = j.find("limit")
            mj_type = "slide" if kind == "prismatic" else "hinge"
            attrs = f'name="{jname}" type="{mj_type}" axis="{_fmt(axis)}" armature="{options.joint_armature:.9g}" ' \
                    f'damping="{options.joint_damping:.9g}"'
            if kind != "continuous" and limit is not None:
                lo, hi = float(limit.get("lower", 0)), float(limit.get("upper", 0))
                attrs += f' range="{lo:.9g} {hi:.9g}" limited="true"'
                ranges[jname] = (lo, hi)
            if limit is not None and limit.get("effort") is not None:
                efforts[jname] = float(limit.get("effort"))
            out.append(f"{indent}  <joint {attrs}/>")
            joints.append(jname)
            mimic = j.find("mimic")
            if mimic is not None:
                mult = float(mimic.get("multiplier", 1.0))
                off = float(mimic.get("offset", 0.0))
                equalities.append(f'<joint joint1="{jname}" joint2="{pre}{mimic.get("joint")}" '
                                  f'polycoef="{off:.9g} {mult:.9g} 0 0 0"/>')
        out.extend(link_contents(child, indent + "  "))
        out.append(f"{indent}</body>")
        return out

    # Sibling bodies that both collide (two fingers on one hand) touch when closed: exclude them.
    for parent, js in children.items():
        colliding = [j.find("child").get("link") for j in js if j.find("child").get("link") in options.collide_links]
        excludes += [(pre + a, pre + b) for i, a in enumerate(colliding) for b in colliding[i + 1:]]
    # The root sits where the URDF mounts it (e.g. left_base_link on dual_piper.urdf's world link).
    mount = next((j for js in children.values() for j in js if j.find("child").get("link") == root_link), None)
    pos, quat = _origin(mount)
    body = ([f'<body name="{pre}{root_link}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">']
            + link_contents(root_link, "  ") + ["</body>"])
    return UrdfBodies("\n".join(body), "\n".join(equalities), joints, ranges, efforts, excludes)
