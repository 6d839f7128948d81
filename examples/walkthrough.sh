#!/usr/bin/env bash
# A walkthrough of llm-vector-index with the real `llm` command: fill a
# collection, create and build indexes, query them, compare with llm's own
# brute-force `llm similar`, then change rows and build again incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
ROWS=${ROWS:-20000}
WORK=walkthrough-data
rm -rf "$WORK" && mkdir -p "$WORK"
export LLM_USER_PATH="$PWD/$WORK/llm-user"
export LLM_EMBEDDINGS_DB="$PWD/$WORK/embeddings.db"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "Filling collection 'articles' with $ROWS clustered 384-d vectors"
python - <<PY
from sqlite_utils import Database
from llm_vector_index.testing import clustered_vectors, write_embeddings
vectors = clustered_vectors($ROWS, 384, clusters=200, seed=1)
ids = [f"a{i:06d}" for i in range($ROWS)]
write_embeddings(Database("$LLM_EMBEDDINGS_DB"), "articles", ids, vectors,
                 model="walkthrough-vectors",
                 contents=[f"article {i}" for i in range($ROWS)])
PY
step llm collections list
step llm index backends
step llm index create articles-hnsw articles
step llm index create articles-exact articles --backend exact
step llm index create articles-hnswlib articles --backend hnswlib
step llm index create articles-chroma articles --backend chroma
for index in articles-hnsw articles-exact articles-hnswlib articles-chroma; do
  step llm index build "$index"
done
step llm index list

echo; echo "The same query: llm's brute force, then each index"
step time llm similar articles a000042 -n 3
for index in articles-exact articles-hnsw articles-hnswlib articles-chroma; do
  step time llm index similar "$index" a000042 -n 3
done

echo; echo "Change 1% of the rows, delete 10, then build again: only those are read"
python - <<PY
from sqlite_utils import Database
from llm_vector_index.testing import clustered_vectors, write_embeddings
db = Database("$LLM_EMBEDDINGS_DB")
count = $ROWS // 100
write_embeddings(db, "articles", [f"a{i:06d}" for i in range(count)],
                 clustered_vectors(count, 384, clusters=200, seed=2), model="walkthrough-vectors")
db.execute("delete from embeddings where id in (select id from embeddings order by id desc limit 10)")
db.conn.commit()
PY
step llm index build articles-hnsw
step llm index similar articles-hnsw a000042 -n 3 --plain
step llm index show articles-hnsw

echo; echo "Make the index the collection's default: llm's own command now uses it"
step llm index default articles articles-hnsw
step time llm similar articles a000042 -n 3

echo; echo "Copy the collection into Chroma, then run it again: nothing to send"
step llm index migrate-chroma articles --path "$WORK/chroma"
step llm index migrate-chroma articles --path "$WORK/chroma"
