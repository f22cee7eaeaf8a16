"""Tests for our Ansible modules and module_utils (plugins/)."""
