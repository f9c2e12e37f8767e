"""public numbers that are never reused, and the server's log of media fetches

Revision ID: b3e1f0c2a9d4
Revises: 7c1e5a9d2b40
Create Date: 2026-12-02 09:00:00

"""
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


def downgrade():
    op.drop_index('ix_media_fetches_trial_id', table_name='media_fetches')
    op.drop_table('media_fetches')
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_constraint('uq_participants_study_id_public_number', type_='unique')
        batch_op.drop_column('public_number')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('participants_enrolled')
