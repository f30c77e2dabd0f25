"""What the tests share that is not a fixture: paths and the tiny search (`search`), the fake Hugging Face
hub (`hub_server`), files in each loader's documented format (`format_fixtures`), hosts in network
namespaces (`netns_hosts`), the racing processes of the shared-file tests (`shared_files_children`) and
an empty MLflow store (`tracking_store`). Fixtures live in tests/conftest.py."""
