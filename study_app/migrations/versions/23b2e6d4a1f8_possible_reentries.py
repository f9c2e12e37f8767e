"""possible re-entries: keyed hashes of each entry's browser marker and client, and the flags

Revision ID: 23b2e6d4a1f8
Revises: 23a1f0e5c7d2
Create Date: 2026-12-07 06:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '23b2e6d4a1f8'
down_revision = '23a1f0e5c7d2'
branch_labels = None
depends_on = None


def upgrade():
    # Participants who entered before have no tags: they are never matched, nor flagged.
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('browser_tag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('client_tag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('possible_reentry_of', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reentry_evidence', sa.String(length=40), nullable=True))
        batch_op.create_index(
            'ix_participants_study_id_browser_tag', ['study_id', 'browser_tag'], unique=False
        )
        batch_op.create_index(
            'ix_participants_study_id_client_tag', ['study_id', 'client_tag'], unique=False
        )


def downgrade():
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_index('ix_participants_study_id_client_tag')
        batch_op.drop_index('ix_participants_study_id_browser_tag')
        batch_op.drop_column('reentry_evidence')
        batch_op.drop_column('possible_reentry_of')
        batch_op.drop_column('client_tag')
        batch_op.drop_column('browser_tag')
