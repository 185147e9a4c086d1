# A claimed job (held by a worker, waiting for a slot) is unfinished, leased and
# rescued like a running one; scheduled and retrying jobs get an index of their
# own, so the leader can relabel them `queued` once due without reading the rest.

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0010_emailallowance'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='job',
            name='job_unique_active_key',
        ),
        migrations.RemoveIndex(
            model_name='job',
            name='job_lease_idx',
        ),
        migrations.AlterField(
            model_name='job',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('scheduled', 'Scheduled'), ('claimed', 'Claimed'), ('running', 'Running'), ('retrying', 'Retrying'), ('completed', 'Completed'), ('dead', 'Dead'), ('cancelled', 'Cancelled'), ('expired', 'Expired')], default='queued', max_length=16),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status__in', ('claimed', 'running'))), fields=['lease_expires_at'], name='job_held_lease_idx'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status__in', ('scheduled', 'retrying'))), fields=['run_at'], name='job_due_idx'),
        ),
        migrations.AddConstraint(
            model_name='job',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ('queued', 'scheduled', 'retrying', 'claimed', 'running')), ('unique_key__isnull', False)), fields=('owner', 'unique_key'), name='job_unique_active_key', nulls_distinct=False),
        ),
    ]
