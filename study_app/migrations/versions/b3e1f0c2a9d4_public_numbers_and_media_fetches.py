"""public numbers that are never reused, and the server's log of media fetches

Revision ID: b3e1f0c2a9d4
Revises: 7c1e5a9d2b40
Create Date: 2026-12-02 09:00:00

"""
import json
import re

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b3e1f0c2a9d4'
down_revision = '7c1e5a9d2b40'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('participants_enrolled', sa.Integer(), nullable=False, server_default='0')
        )
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_number', sa.Integer(), nullable=True))
    # Existing participants keep the public id they were shown (P + assignment index + 1);
    # previews keep their negative numbers.
    op.execute(
        "update participants set public_number = case when assignment_index >= 0 "
        "then assignment_index + 1 else assignment_index end"
    )
    op.execute(
        "update studies set participants_enrolled = coalesce((select max(p.public_number) "
        "from participants p where p.study_id = studies.id and p.public_number > 0), 0)"
    )
    _count_withdrawn_participants()
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.alter_column('public_number', existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint(
            'uq_participants_study_id_public_number', ['study_id', 'public_number']
        )
    op.create_table('media_fetches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.String(length=16), nullable=False),
    sa.Column('first_byte', sa.Integer(), nullable=False),
    sa.Column('end_byte', sa.Integer(), nullable=False),
    sa.Column('total_bytes', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_media_fetches_trial_id', 'media_fetches', ['trial_id'], unique=False)


def _count_withdrawn_participants():
    """A withdrawn participant's row is gone, but their public id must not be given again: the
    audit log keeps it ("withdraw" events, detail.participant "P0007"), so the count starts at
    least there. (Withdrawing the latest arrival left no row with its number.)"""
    bind = op.get_bind()
    highest = {}
    events = bind.execute(
        sa.text(
            "select study_id, detail from audit_events "
            "where action = 'withdraw' and study_id is not null"
        )
    )
    for study_id, detail in events:
        if isinstance(detail, str):  # SQLite hands JSON back as text
            detail = json.loads(detail)
        found = re.fullmatch(r"P(\d+)", str((detail or {}).get("participant", "")))
        if found:
            highest[study_id] = max(highest.get(study_id, 0), int(found.group(1)))
    for study_id, number in highest.items():
        bind.execute(
            sa.text(
                "update studies set participants_enrolled = :number "
                "where id = :study and participants_enrolled < :number"
            ),
            {"number": number, "study": study_id},
        )


def downgrade():
    op.drop_index('ix_media_fetches_trial_id', table_name='media_fetches')
    op.drop_table('media_fetches')
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_constraint('uq_participants_study_id_public_number', type_='unique')
        batch_op.drop_column('public_number')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('participants_enrolled')
