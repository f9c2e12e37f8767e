"""media evidence kept per trial slot (the union of the ranges sent), not one row per request

Revision ID: 23a1f0e5c7d2
Revises: b3e1f0c2a9d4
Create Date: 2026-12-07 06:00:00

The upgrade folds the old log into the new rows: per (trial, slot), the union of the ranges
sent before the trial's answer (the old export counted no later ones either), the number of
requests, and the first and last times. The downgrade writes one old row per stored range.
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '23a1f0e5c7d2'
down_revision = 'b3e1f0c2a9d4'
branch_labels = None
depends_on = None

# As listening.MAX_RANGES, frozen here: a migration must not change when the app does.
MAX_RANGES = 32
BATCH = 1000


def upgrade():
    op.create_table('media_evidence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.String(length=16), nullable=False),
    sa.Column('total_bytes', sa.Integer(), nullable=False),
    sa.Column('ranges', sa.JSON(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_requests', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('trial_id', 'slot', name='uq_media_evidence_trial_slot')
    )
    bind = op.get_bind()
    evidence = sa.table(
        'media_evidence',
        sa.column('trial_id', sa.Integer()),
        sa.column('slot', sa.String()),
        sa.column('total_bytes', sa.Integer()),
        sa.column('ranges', sa.JSON()),
        sa.column('requests', sa.Integer()),
        sa.column('first_at', sa.DateTime(timezone=True)),
        sa.column('last_at', sa.DateTime(timezone=True)),
        sa.column('window_start', sa.DateTime(timezone=True)),
        sa.column('window_requests', sa.Integer()),
    )
    # Ordered by trial and slot, streamed: one group in memory at a time, however long the log.
    rows = bind.execute(
        sa.text(
            "select f.trial_id, f.slot, f.first_byte, f.end_byte, f.total_bytes, f.at, "
            "r.answered_at from media_fetches f left join responses r on r.trial_id = f.trial_id "
            "order by f.trial_id, f.slot, f.id"
        ).execution_options(stream_results=True, yield_per=BATCH)
    )
    batch = []
    group = None
    for trial_id, slot, first, end, total, at, answered_at in rows:
        at, answered_at = _utc(at), _utc(answered_at)
        if group is None or group['trial_id'] != trial_id or group['slot'] != slot:
            if group is not None:
                batch.append(group)
            group = {
                'trial_id': trial_id, 'slot': slot, 'total_bytes': total, 'ranges': [],
                'requests': 0, 'first_at': at, 'last_at': at, 'window_start': at,
                'window_requests': 0,
            }
        group['requests'] += 1
        group['last_at'] = max(group['last_at'], at)
        group['first_at'] = min(group['first_at'], at)
        group['total_bytes'] = max(group['total_bytes'], total)
        if answered_at is None or at <= answered_at:
            group['ranges'] = _merge(group['ranges'], first, end)
        if len(batch) >= BATCH:
            op.bulk_insert(evidence, batch)
            batch = []
    if group is not None:
        batch.append(group)
    if batch:
        op.bulk_insert(evidence, batch)
    op.drop_index('ix_media_fetches_trial_id', table_name='media_fetches')
    op.drop_table('media_fetches')


def _utc(moment):
    """A stored time as an aware UTC datetime: SQLite hands raw times back as text, with or
    without a zone (the app's are UTC), PostgreSQL as datetimes in the session's zone."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _merge(ranges, first, end):
    """The union of half-open ranges with [first, end) added; past MAX_RANGES the smallest go."""
    merged = []
    for lo, hi in sorted([*(tuple(r) for r in ranges), (first, end)]):
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > MAX_RANGES:
        merged = sorted(sorted(merged, key=lambda r: r[1] - r[0], reverse=True)[:MAX_RANGES])
    return merged


def downgrade():
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
    fetches = sa.table(
        'media_fetches',
        sa.column('trial_id', sa.Integer()),
        sa.column('slot', sa.String()),
        sa.column('first_byte', sa.Integer()),
        sa.column('end_byte', sa.Integer()),
        sa.column('total_bytes', sa.Integer()),
        sa.column('at', sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("select trial_id, slot, ranges, total_bytes, first_at from media_evidence")
    )
    batch = []
    for trial_id, slot, ranges, total, first_at in rows:
        if isinstance(ranges, str):  # SQLite hands JSON back as text
            ranges = json.loads(ranges)
        for first, end in ranges:
            batch.append({
                'trial_id': trial_id, 'slot': slot, 'first_byte': first, 'end_byte': end,
                'total_bytes': total, 'at': _utc(first_at),
            })
    if batch:
        op.bulk_insert(fetches, batch)
    op.drop_table('media_evidence')
