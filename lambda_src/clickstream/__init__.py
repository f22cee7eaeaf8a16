"""Clickstream platform code shared by Lambda Ingest, Lambda ETL, the backfill module and the tests.

Pure modules (``contract``, ``mapping``, ``partitions``) import no AWS or database library;
``warehouse``, ``migrations`` and ``loader`` hold the PostgreSQL I/O, ``raw_store`` the S3 I/O.
"""
