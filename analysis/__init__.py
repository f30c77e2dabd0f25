"""Analysis of a search: winner selection (`selection`), MLflow run loading (`runs`), the paper's
tables (`tables`, `paper_values`) and figures (`plots`); `python -m analysis <run-dir|search-id>`."""
