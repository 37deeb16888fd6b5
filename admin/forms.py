"""Forms of the staff side."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):
    """Sign in with an email address and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ApproveForm(FlaskForm):
    """Approve erasure along the plan that was on the screen."""

    plan_digest = HiddenField(validators=[DataRequired()])
