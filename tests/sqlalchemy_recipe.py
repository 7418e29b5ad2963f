"""The README's SQLAlchemy / Flask-SQLAlchemy recipe, as text: ``RECIPE`` is the README's code
block character for character, and ``tests/test_sqlalchemy.py`` runs it as written (``exec``)
with ``DATABASE_URL`` set to a fresh database's ``postgresql+psycopg://`` URL."""

from __future__ import annotations

RECIPE = """\
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from graphile_worker_utils.contrib.sqlalchemy import worker_utils

class Base(DeclarativeBase):
    pass

db = SQLAlchemy(model_class=Base)

class Signup(db.Model):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]

# A script. postgresql+psycopg:// is psycopg 3, the only driver the library takes;
# behind PgBouncer add connect_args={"prepare_threshold": None}.
engine = create_engine(DATABASE_URL, pool_pre_ping=True)

def sign_up(email: str) -> int:
    with Session(engine) as session, session.begin():  # commit at the end, or rollback
        signup = Signup(email=email)
        session.add(signup)
        # worker_utils() flushes the session first, as a query would: signup.id is set.
        worker_utils(session).add_raw_job("send_welcome", {"signup_id": signup.id})
        return signup.id  # the row and the job, or neither

# Flask-SQLAlchemy: db.session is the request's session.
def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)

    @app.post("/signups")
    def signup():
        signup = Signup(email=request.get_json()["email"])
        db.session.add(signup)
        worker_utils(db.session).add_raw_job("send_welcome", {"signup_id": signup.id})
        db.session.commit()  # both, or neither: the request's session is rolled back if
        return {"signup_id": signup.id}, 201  # the view raises before this commit

    return app
"""
