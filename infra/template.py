"""Read template.yaml as the local run needs it: a tiny resolver for a stack that is not deployed.

It resolves `Ref`, `Fn::GetAtt` (Arn, Name) and `Fn::Sub` against parameter values and the names
a `LocalStack` gives the resources, which is all template.yaml uses in function environments and
state machine substitutions. Nothing here talks to AWS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
STATE_MACHINE = "AnonymizeStateMachine"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:]+)\}")


class TemplateError(Exception):
    """template.yaml cannot be read or uses something this resolver does not know."""


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml as plain dicts (short-form tags become their long forms)."""
    template, problems = decode_str(path.read_text())
    if problems or template is None:
        raise TemplateError(f"{path}: cannot parse ({'; '.join(str(p) for p in problems)})")
    return template


@dataclass
class LocalStack:
    """Names and values a deployment would give the template's resources, for a local run."""

    template: dict[str, Any]
    stack_name: str = "limelight-local"
    region: str = "us-east-1"
    account: str = "123456789012"
    overrides: dict[str, str] = field(default_factory=dict)

    # -- what the template declares -------------------------------------------------------------
    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def of_type(self, kind: str) -> list[str]:
        return [name for name, res in self.resources.items() if res["Type"] == kind]

    def parameter(self, name: str) -> str:
        if name in self.overrides:
            return str(self.overrides[name])
        declared = self.template.get("Parameters", {}).get(name)
        if declared is None or "Default" not in declared:
            raise TemplateError(f"parameter {name} has no default and no override")
        return str(declared["Default"])

    def physical_name(self, logical: str) -> str:
        """Bucket or function name (lower case, valid for both)."""
        return f"{self.stack_name}-{logical}".lower()

    def function_arn(self, logical: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.physical_name(logical)}"

    def state_machine_name(self) -> str:
        return self.resolve(self.resources[STATE_MACHINE]["Properties"]["Name"])

    # -- resolution -----------------------------------------------------------------------------
    def _pseudo(self, name: str) -> str | None:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
        }.get(name)

    def _ref(self, name: str) -> str:
        pseudo = self._pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        resource = self.resources.get(name)
        if resource is None:
            raise TemplateError(f"Ref to unknown name {name}")
        if resource["Type"] == "AWS::Serverless::StateMachine":
            return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{self.state_machine_name()}"
        return self.physical_name(name)

    def _get_att(self, logical: str, attribute: str) -> str:
        kind = self.resources[logical]["Type"]
        if kind == "AWS::Serverless::Function" and attribute == "Arn":
            return self.function_arn(logical)
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.physical_name(logical)}"
        if kind == "AWS::Serverless::StateMachine" and attribute == "Name":
            return self.state_machine_name()
        raise TemplateError(f"Fn::GetAtt {logical}.{attribute} is not supported locally")

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function replaced by its local value."""
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._get_att(logical, attribute)
            if key == "Fn::Sub":
                if not isinstance(arg, str):
                    raise TemplateError("Fn::Sub with a variable map is not supported locally")
                return PLACEHOLDER.sub(lambda m: self._sub(m.group(1)), arg)
            if key.startswith("Fn::"):
                raise TemplateError(f"{key} is not supported locally")
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def _sub(self, name: str) -> str:
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self._get_att(logical, attribute)
        return self._ref(name)

    def notifies(self, key: str) -> bool:
        """Whether an upload under `key` to the input bucket makes S3 call the start function: one
        of its S3 events' key filters matches, as S3 matches them (prefix and suffix, both
        case-sensitive). moto does not emulate notifications; the local run asks this instead."""
        for event in self.resources["StartFunction"]["Properties"]["Events"].values():
            rules = {r["Name"]: self.resolve(r["Value"]) for r in event["Properties"]["Filter"]["S3Key"]["Rules"]}
            if key.startswith(rules.get("prefix", "")) and key.endswith(rules.get("suffix", "")):
                return True
        return False

    def rule_targets(self, event: dict[str, Any]) -> list[str]:
        """The functions an EventBridge event is delivered to: those with an EventBridgeRule event
        whose pattern matches it (each field one of the listed values, nested fields alike, as
        EventBridge matches plain patterns). moto does not route service events; the local run asks this."""
        return [
            logical
            for logical, resource in self.resources.items()
            if resource["Type"] == "AWS::Serverless::Function"
            for rule in resource["Properties"].get("Events", {}).values()
            if rule["Type"] == "EventBridgeRule" and _matches(self.resolve(rule["Properties"]["Pattern"]), event)
        ]

    # -- what the local run needs ---------------------------------------------------------------
    def function_environment(self, logical: str) -> dict[str, str]:
        """Globals' variables overlaid with the function's own, resolved."""
        globals_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own = self.resources[logical]["Properties"].get("Environment", {}).get("Variables", {})
        return {k: str(v) for k, v in self.resolve({**globals_env, **own}).items()}

    def function_handler(self, logical: str) -> str:
        """`module.function` from ImageConfig.Command (one image, the handler chosen per function)."""
        return self.resources[logical]["Properties"]["ImageConfig"]["Command"][0]

    def substitutions(self) -> dict[str, str]:
        props = self.resources[STATE_MACHINE]["Properties"]
        return {k: str(v) for k, v in self.resolve(props["DefinitionSubstitutions"]).items()}

    def definition_path(self) -> Path:
        return REPO / self.resources[STATE_MACHINE]["Properties"]["DefinitionUri"]

    def definition(self) -> str:
        """The ASL with every ${Placeholder} substituted, as Step Functions receives it."""
        values = self.substitutions()
        text = self.definition_path().read_text()
        missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
        if missing:
            raise TemplateError(f"ASL placeholders without a substitution: {', '.join(missing)}")
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _matches(pattern: dict[str, Any], event: Any) -> bool:
    for key, wanted in pattern.items():
        value = event.get(key) if isinstance(event, dict) else None
        if isinstance(wanted, dict):
            if not _matches(wanted, value):
                return False
        elif value not in wanted:
            return False
    return True
