"""Forms of staff sign-in, the "My account" page and the users page."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional, Regexp

from core.models import Role
from core.staff import MIN_PASSWORD_LENGTH

ROLE_CHOICES = {
    Role.ADMIN.value: "Admin — users, systems, settings",
    Role.DPO.value: "DPO — decides on requests",
    Role.OPERATOR.value: "Operator — prepares, runs and retries; cannot decide",
    Role.AUDITOR.value: "Auditor — reads proofs, the audit log and reports",
}
_NEW_PASSWORD = [
    Length(
        min=MIN_PASSWORD_LENGTH,
        max=1024,
        message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
    )
]


class LoginForm(FlaskForm):
    """Sign in with an email address and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class CodeForm(FlaskForm):
    """A six-digit code from an authenticator app."""

    code = StringField(
        "Code from your authenticator app",
        validators=[
            DataRequired(message="Enter the 6-digit code."),
            Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message="The code is 6 digits."),
        ],
        render_kw={"inputmode": "numeric", "maxlength": 7, "size": 8},
    )


class PasswordChangeForm(FlaskForm):
    """Change one's own password, proving one knows the current one."""

    current = PasswordField(
        "Current password",
        validators=[DataRequired(message="Enter your current password."), Length(max=1024)],
    )
    new = PasswordField(
        "New password",
        description=f"At least {MIN_PASSWORD_LENGTH} characters; a few unrelated words work well.",
        validators=[DataRequired(message="Choose a new password."), *_NEW_PASSWORD],
    )
    confirm = PasswordField(
        "New password again",
        validators=[
            DataRequired(message="Type the new password again."),
            EqualTo("new", message="The two new passwords differ."),
        ],
    )


class CreateUserForm(FlaskForm):
    """Create a staff account, with a generated password unless one is typed."""

    email = EmailField(
        "Email",
        validators=[
            DataRequired(message="Enter the staff member's email address."),
            Email(message="This is not an email address."),
            Length(max=254),
        ],
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.OPERATOR.value)
    password = PasswordField(
        "Password (optional)",
        description="Leave empty to generate one, shown once on the next page.",
        validators=[Optional(), *_NEW_PASSWORD],
    )


class RoleForm(FlaskForm):
    """Give a staff member another role."""

    role = SelectField("Role", choices={role.value: role.value for role in Role})


class ActiveForm(FlaskForm):
    """Deactivate ("0") or reactivate ("1") an account."""

    active = HiddenField(validators=[DataRequired(), Regexp("^[01]$")])


class ConfirmForm(FlaskForm):
    """A button that changes something: only its CSRF token is checked."""
