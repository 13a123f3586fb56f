"""The operator's "new task" form: what POST /api/v1/tasks accepts, as an HTML form."""

import json

from django import forms

from apps.workflows.choices import ResourceClass


class TaskCreateForm(forms.Form):
    kind = forms.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", max_length=100,
                            error_messages={"invalid": "Letters, digits and . _ : - only."},
                            widget=forms.TextInput(attrs={"placeholder": "demo.echo, report.build, lora.train…"}))
    payload = forms.CharField(required=False, initial="{}", widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
                              help_text="A JSON object.")
    capabilities = forms.CharField(required=False, max_length=1000, help_text="Comma-separated, e.g. llm, python.")
    priority = forms.IntegerField(initial=0, min_value=-1000, max_value=1000, help_text="Higher runs first.")
    resource_class = forms.ChoiceField(required=False, label="Resources",
                                       choices=[("", "Decide (classifier)"), *ResourceClass.choices])
    vram_mb = forms.IntegerField(required=False, min_value=1, max_value=4_000_000, label="VRAM (MiB)")
    model = forms.CharField(required=False, max_length=128)
    max_attempts = forms.IntegerField(initial=3, min_value=1, max_value=50)
    attempt_timeout_s = forms.IntegerField(initial=300, min_value=5, max_value=86400, label="Attempt timeout (s)")
    queued_timeout_s = forms.IntegerField(required=False, min_value=1, max_value=30 * 86400, label="Queued timeout (s)")
    overall_timeout_s = forms.IntegerField(required=False, min_value=1, max_value=30 * 86400, label="Overall timeout (s)")

    # ApplicationError.fields names API inputs; these are the form fields they belong to.
    SERVICE_FIELDS = {"resources.vram_mb": "vram_mb", "resources.class": "resource_class", "kind": "kind",
                      "required_capabilities": "capabilities", "priority": "priority"}

    def clean_payload(self):
        raw = (self.cleaned_data.get("payload") or "").strip() or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The payload must be a JSON object ({…}).")
        return value

    def clean_capabilities(self):
        raw = self.cleaned_data.get("capabilities") or ""
        caps = sorted({c.strip() for c in raw.replace("\n", ",").split(",") if c.strip()})
        if any(len(c) > 100 for c in caps) or len(caps) > 50:
            raise forms.ValidationError("At most 50 capabilities of up to 100 characters.")
        return caps

    def service_kwargs(self) -> dict:
        """The cleaned form as services.task_create() arguments."""
        d = self.cleaned_data
        resources = {}
        if d["resource_class"]:
            resources["class"] = d["resource_class"]
        if d["vram_mb"]:
            resources["vram_mb"] = d["vram_mb"]
        return {
            "kind": d["kind"], "payload": d["payload"], "required_capabilities": d["capabilities"],
            "priority": d["priority"], "resources": resources or None, "model": d["model"],
            "max_attempts": d["max_attempts"], "attempt_timeout_s": d["attempt_timeout_s"],
            "queued_timeout_s": d["queued_timeout_s"], "overall_timeout_s": d["overall_timeout_s"],
        }

    def add_service_error(self, exc) -> None:
        """Put an ApplicationError's messages beside the inputs they name."""
        placed = False
        for name, messages in (exc.fields or {}).items():
            field = self.SERVICE_FIELDS.get(name) or ("payload" if name.startswith("payload") else None)
            if field:
                for m in messages if isinstance(messages, list) else [messages]:
                    self.add_error(field, f"{name}: {m}" if name.startswith("payload.") else m)
                placed = True
        if not placed or exc.message:
            self.add_error(None, exc.message)
