# Pack an already built corpus v2 (manifest.csv + clips/) with the recipe's pack_ogg and report size and SNR.
# Usage: python benchmarks/pack_corpus_v2_snr.py   (reads and writes /tmp/cv2/out; edit `out` for another build)
import csv, hashlib, json, sys, os, time
sys.path.insert(0, "recipes/sound-corpus")
import numpy as np, soundfile as sf
import build_corpus as bc
out = "/tmp/cv2/out"
clips = []
t0 = time.time()
for r in csv.DictReader(open(f"{out}/manifest.csv")):
    a, sr = sf.read(os.path.join(out, r["path"]), dtype="int16")
    clips.append({"audio": a, "sha1": hashlib.sha1(a.tobytes()).hexdigest(), "label": r["label"],
                  "group": r["group"], "split": r["split"], "path": r["path"]})
pack = bc.pack_ogg(f"{out}/corpus-ogg.npz", clips, bc.PACK_LIMIT_BYTES)
pack["pack_seconds"] = round(time.time() - t0, 1)
print(json.dumps(pack))
json.dump(pack, open(f"{out}/pack.json", "w"), indent=1)
