"""The admin's JSON text fields (a rule's properties, a push app's extra headers, a token reporter's
parameters and fixed values, the User-Agent tester's extra fields)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from django.forms.fields import InvalidJSONInput

from core.jsonlimits import MAX_JSON_DEPTH, json_depth_exceeds


class JSONTextField(forms.JSONField):
    """Django's JSON form field with two guards the API's parser has too:

    * JSON nested deeper than MAX_JSON_DEPTH is refused before json.loads, whose recursion ended in
      RecursionError (a 500) a few kilobytes of `[[[[` deep;
    * a refused form shows the text as typed, never re-encoded from the decoded value: that value
      may hold what cannot be encoded (a lone surrogate, `\\ud800`, which the models refuse), and
      rendering it failed (a 500 in place of the form error)."""

    default_error_messages = {"too_deep": f"JSON nested deeper than {MAX_JSON_DEPTH} levels."}

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and json_depth_exceeds(value):
            raise forms.ValidationError(self.error_messages["too_deep"], code="too_deep")
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        return InvalidJSONInput(data)


# For a ModelAdmin's formfield_overrides: every JSON model field of its form is a JSONTextField.
JSON_FORMFIELD_OVERRIDES: dict[type[models.Field], dict[str, Any]] = {models.JSONField: {"form_class": JSONTextField}}
