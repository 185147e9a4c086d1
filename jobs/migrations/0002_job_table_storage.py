from django.db import migrations


class Migration(migrations.Migration):
    """Tune the jobs table for a queue's churn.

    Every job is updated several times (claim, renew, finish), so leave room
    on each page for HOT updates, and vacuum far more eagerly than the 20 %
    default so dead tuples do not pile up in front of the claim index.
    """

    dependencies = [("jobs", "0001_initial")]

    operations = [
        migrations.RunSQL(
            sql="""
                ALTER TABLE jobs_job SET (
                    fillfactor = 70,
                    autovacuum_vacuum_scale_factor = 0.01,
                    autovacuum_vacuum_insert_scale_factor = 0.02,
                    autovacuum_analyze_scale_factor = 0.02,
                    autovacuum_vacuum_cost_limit = 2000
                );
                ALTER INDEX job_claim_idx SET (fillfactor = 70);
            """,
            reverse_sql="""
                ALTER TABLE jobs_job RESET (
                    fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor,
                    autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_limit
                );
                ALTER INDEX job_claim_idx RESET (fillfactor);
            """,
        ),
    ]
