"""Tests of the HTTP backend (backend/server) and its clients."""
