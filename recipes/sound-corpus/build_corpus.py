#!/usr/bin/env python3
"""Build a labelled 16 kHz mono corpus of real recorded sound clips from
Debian packages (extracted by build.sh), fluidsynth-rendered instrument notes
and espeak-ng speech.

Usage: python3 build_corpus.py --extract DIR --outdir DIR --cache DIR

Outputs (in --outdir):
  clips/<split>/<category>/<id>.flac   16 kHz mono int16
  manifest.csv                         path,label,group,split,duration,package
  corpus.npz                           audio/offsets/labels/groups/splits/sample_rate
  summary.json                         counts, durations, failures
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections import Counter, defaultdict
from math import gcd
from multiprocessing import Pool

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SR = 16000
MAX_SEC = 8.0           # per-clip cap (clips/ and manifest)
MIN_SEC = 0.3
TRIM_DB = -50.0         # relative to peak
MAX_READ_SEC = 40.0     # never decode more than this from a (long) file
HELDOUT_PERMILLE = 150  # ~15 % of groups
NPZ_LIMIT_BYTES = 45_000_000  # decimal MB; the GPU transfer limit is 64 MiB
AUDIO_EXT = (".wav", ".ogg", ".flac", ".mp3")


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Labelling rules.  Each rule: (category, regex).  Regexes are matched against
# a "key" = lower-cased relative path with separators turned into spaces
# (e.g. "sounds animals bird2 00").  First match wins; None means skip.
# --------------------------------------------------------------------------

def R(pattern):
    return re.compile(pattern)


GENERAL_RULES = [
    # -- human voice
    ("laugh", R(r"laugh")),
    ("scream", R(r"scream|screech(?!.*electronic)")),
    ("cough_sneeze", R(r"cough|sneeze")),
    ("scream", R(r"babycry|baby cry")),
    ("beatbox", R(r"beatbox")),
    ("singing", R(r"singer|sing me|come and play|join us|got inspiration|oooo badada|hey yay hey|doy doy|\bvocals ya\b|ambi choir|chorus|choir")),
    ("crowd", R(r"applause|cheering|crowd|party ?noise|citysounds|tavern|\binn\b|biginn")),
    ("clap_snap", R(r"hand ?clap|finger ?snap|\bclap\d*\b|\bsnap\d*\b|perc snap")),
    ("footsteps", R(r"footstep")),
    # -- animals
    ("dog", R(r"\bdog\d*\b|puppy|dogmatix")),
    ("cat", R(r"\bcat\b|kitten|meow|blackcat")),
    ("rooster_chicken", R(r"rooster|\bhen\b|turkey|guinea fowl|pheasant|quail|wood grouse")),
    ("duck_goose", R(r"duck|drake|goose|gander")),
    ("owl", R(r"\bowl\b|eagle owl")),
    ("bird_song", R(r"\bcrow\b")),
    ("seagull", R(r"gull|albatross|pelican|booby")),
    ("bird_song", R(r"bird|sparrow|lark|cuckoo|quetzal|tucan|toucan|iora|flamingo|heron|stork|emu|nandou|penguin|vulture")),
    ("cow", R(r"\bcow|\bmoo\b|\bbull\b|\bcalf\b|\box\b|bison|\byak\b|farm animal")),
    ("horse", R(r"horse|foal|zebra|donkey|gallop|canter")),
    ("sheep_goat", R(r"sheep|\bram\b|goat")),
    ("pig", R(r"\bpig|\bboar\b")),
    ("wolf_howl", R(r"wolf|coyote")),
    ("insect", R(r"\bbee\b|mosquito|hornet|grasshopper|cricket|beetle|weevil|xanthia|\bbees\b")),
    ("frog", R(r"frog")),
    ("monkey", R(r"chimp|gorilla|monkey")),
    ("wild_mammal", R(r"elephant")),
    ("sea_mammal", R(r"whale|dolphin|orca|sea ?lion")),
    ("big_cat_roar", R(r"\blion\b|tiger|jaguar|lynx")),
    ("rodent", R(r"mouse|squirrel|hamster|beaver|chinchilla|jerboa|rabbit|porcupine|hedgehog")),
    ("deer", R(r"deer|moose|\bstag\b")),
    ("bat", R(r"\bbats?\d*\b|bat left")),
    ("wild_mammal", R(r"\bbear\b|giant panda")),
    # -- instruments
    ("piano", R(r"piano|harpsichord")),
    ("organ_accordion", R(r"organ|accordion|squeezebox|harmonica|bagpipe|aeoline")),
    ("guitar", R(r"guitar|guit |ukulele|\blute\b|banjo")),
    ("bass_guitar", R(r"bassslap")),
    ("bowed_strings", R(r"violin|cello|gamba|erhu|rabel|string accent|stringaccent|spookystring|spooky string|\bstrings\d*\b")),
    ("plucked_strings", R(r"\bharp\b|zither|yangqin|yueqin|topshuur|stringpluck|string pluck|afrostring|afro string|tambura")),
    ("brass", R(r"trumpet|\bhorn\b|natural horn|brass|rozhok|\btuba\b|trombone")),
    ("saxophone", R(r"saxophone")),
    ("woodwind", R(r"clarinet|oboe|bassoon|dulzaina|zurna|zhaleyka|dijjeridoo|didgeridoo")),
    ("flute", R(r"flute|recorder|quena|\bxun\b|\bney\b|washint")),
    ("mallet_percussion", R(r"xylophone|xylo|\bhang\b|marimba")),
    ("bell_chime", R(r"\bbell|chime|gong|\bdong\b|elec triangle|cowbell")),
    ("cymbal_hihat", R(r"cymbal|hihat|\bcrash \d+|\bride\b|splash (hard|soft)")),
    ("kick_drum", R(r"kick|bassdrum|\bbd |drum bass|bass drum")),
    ("snare_drum", R(r"snare|\bsn |sidestick|\brim\d*\b|drum ?buzz|drumbuzz")),
    ("tom_drum", R(r"\btom|timpani|drum roll")),
    ("hand_percussion", R(r"tabla|shaker|maracas|cuica|slit drum|spoons|\bwood \d+|\bipu\b|\bclav\b")),
    ("drum_loop", R(r"drumset|drum set|drummachine|drum machine|hiphop|\bdrum\b|drums\b|amen|breakbeat|\bbreak \d+|beat \d+|house loop|jungle \d+|loop perc|loop tabla|loop compus|loop safari|wardrums")),
    # -- things / environment
    ("explosion", R(r"explo|cineboom|\bboom\b|cave in|quake|nuclear|meteor|shockwave")),
    ("gunshot", R(r"gunshot|machinegun|shotgun|thunderstick|tripleshot|dragonstick|\bshoot (small|medium|large|xlarge)\b")),
    ("laser_scifi", R(r"laser|\bzap|teleport|beamup|\bwarp|alien|spaceripple|space ripple|spiral|fairydust|whoop|zoop")),
    ("thunder", R(r"thunder|lightning ?bolt|lightningbolt")),
    ("wind_rain_waves", R(r"\brain\b|\bwind\b|ocean|waves")),
    ("fire", R(r"\bfire\b|fire (small|large|fire)|torch|flame|campfire|burning|\bfuse\b|napalm")),
    ("water", R(r"water|splash|plunge|ripples|drip|bubble|bubbles|lava")),
    ("horn_siren", R(r"policecar|firetruck|siren|carhorn|car horn")),
    ("aircraft", R(r"airplane|helicopter|quadrocopter|\bjet\b|\bf 1[68]\b|\bt 38\b|cessna|apache|propeller|plane")),
    ("vehicle_engine", R(r"motorcycle|carpassing|car passing|tractor|tankmove|\bbus\b|truck|excavator")),
    ("train", R(r"\btrain\b|locomotive|cart moving|steam")),
    ("door", R(r"door|chest|gate")),
    ("crash_break", R(r"glass")),
    ("wood_chop", R(r"woodcutting|tree falling|tree crash|chop|hatchet(?! miss)")),
    ("saw", R(r"\bsaw\b|sawing|benchsaw|sawmill|chainsaw")),
    ("hammer_metal", R(r"hammer|smith|anvil|mallet metal|stonecutter|stonemason|ironping|goldping")),
    ("machine", R(r"sewing|vacuum|washing|weaving|weaver|mill turning|3d printer|factoryloop|factory|machinery|typing|mortar|stonegrind")),
    ("coins_cash", R(r"\bgold\b|cash till|perc till")),
    ("clock_tick", R(r"clock|\bwatch\b|metronome|timer")),
    ("vinyl_scratch", R(r"vinyl")),
    ("whoosh", R(r"swoosh|woosh|swish|\bswash\b")),
]

QABCS_SKIP = set("""
adjutant anklet austrian_flag balloons bicycle boot button cabin camera_lens chalkboard changu cheburashka chef
christmas_tree circus clown crane dice display dogmatix doll dunno ear earth easel emelya estonian_flag firebird
fish football gamekeeper glove grommet hat hockey horn hyena ice_skate igloo iguana iotshin ivasyk jack jar
joker jug jump_rope kazoo keyboard kinder_surprise_egg kite ladybug lunchbox magnet magnifying_glass moth
necklace newspaper newt ode oedephon ole_lukoje origami paint paper_airplane pen pipe pishik prince pupil
python aesculapian_snake quarter quarter_note quilt quiz_game ratchet rhinoceros raccoon otter robot rocket
rocking_horse rubber_ball sailorboy schooler security_camera seesaw shield skateboard snail sound spider star
top turtle umbrella umka unicycle urchin ursula vase volleyball wagon walkie_talkie wallaby watercolor whirligig
whistle x_men x_ray xbox yaga yeti yinyang yobel yoyo zipline zipper zoetrope zozulka giraffe ferret koala
""".split())


# package-specific rules are tried before the general ones; ("", R) = skip
PACKAGE_RULES = {
    "wesnoth-1.16-data": [
        ("", R(r"^sounds ")),   # UI sounds in top-level sounds/
        ("brass", R(r"horn signals|fanfare")),
        ("bird_song", R(r"ambient birds|ambient morning")),
        ("insect", R(r"ambient night")),
        ("fire", R(r"ambient campfire")),
        ("drum_loop", R(r"wardrums")),
        ("", R(r"ambient ship")),
        ("human_grunt", R(r"\b(human|dwarf|elf)\b.*\b(hit|die)\b|groan|\bugg\b|dwarf laugh")),
        ("laugh", R(r"witches laugh")),
        ("wolf_howl", R(r"\bwolf ")),
        ("horse", R(r"\bhorse (hit|die)")),
        ("bat", R(r"\bbat (hit|flapping)")),
        ("monster_vocal", R(r"\b(orc|troll|ogre|goblin|gryphon|drake|zombie|skeleton|lich|naga|wose|yeti|tusker|mermen|mermaid|ghoul|wail|hiss)\b")),
        ("magic_spell", R(r"magic|heal|petrified|slowed|poison|entangle|faeriefire|lightning|\bink\b|ink miss|potion")),
        ("sword_clash", R(r"sword|\baxe\b|mace|club|flail|spear|knife|dagger|staff|claws|hatchet|\bfist\b|pincers|bite")),
        ("bow_arrow", R(r"\bbow\b|crossbow|sling|throw|dart")),
        ("gunshot", R(r"gunshot|thunderstick|dragonstick")),
        ("whoosh", R(r"\bmiss \d")),
        ("coins_cash", R(r"\bgold\b")),
    ],
    "minetest-data": [
        ("footsteps", R(r"footstep")),
        ("dig_mine", R(r"\bdig|\bdug\b|place node|tool breaks|gravel")),
        ("crash_break", R(r"break glass")),
        ("water", R(r"env sounds water|water|cool lava|extinguish")),
        ("fire", R(r"env sounds lava|fire|flint|burning|ignite")),
        ("explosion", R(r"explode")),
        ("door", R(r"door|chest|fencegate")),
        ("train", R(r"cart moving")),
        ("machine", R(r"furnace")),
        ("", R(r".")),
    ],
    "sonic-pi-samples": [
        ("", R(r"buffers|readme")),
        ("singing", R(r"ambi choir")),
        ("piano", R(r"ambi piano")),
        ("synth_pad", R(r"^ambi |loop drone")),
        ("synth_bass", R(r"^bass |glitch bass")),
        ("kick_drum", R(r"^bd |drum bass|drum heavy kick|elec (hollow|soft) kick")),
        ("snare_drum", R(r"^sn |drum snare|elec .*snare")),
        ("tom_drum", R(r"drum tom|drum roll|fuzz tom")),
        ("cymbal_hihat", R(r"drum (cymbal|splash)|elec cymbal")),
        ("bell_chime", R(r"drum cowbell|perc bell|elec (bell|chime|bong|triangle)")),
        ("coins_cash", R(r"perc till")),
        ("hand_percussion", R(r"tabla|elec wood|perc snap")),
        ("electronic_blip", R(r"elec |glitch|mehackit phone")),
        ("electronic_blip", R(r"robot")),
        ("drum_loop", R(r"loop (amen|breakbeat|compus|perc|tabla|safari|mika|garzul|mehackit|industrial|electric|weirdo|3d printer)")),
        ("guitar", R(r"^guit ")),
        ("piano", R(r"ambi piano")),
        ("", R(r"misc burp")),
        ("bird_song", R(r"misc crow")),
        ("explosion", R(r"cineboom|perc impact")),
        ("door", R(r"perc door")),
        ("whoosh", R(r"swoosh|swash")),
        ("vinyl_scratch", R(r"vinyl")),
    ],
    "lmms-common": [
        ("", R(r"^(waveforms|shapes) ")),
        ("synth_bass", R(r"^(basses|bassloops) ")),
        ("synth_pad", R(r"^stringsnpads (?!chorus|bell)")),
        ("singing", R(r"stringsnpads chorus")),
        ("bell_chime", R(r"bell choir|wind chimes|dong|metalish")),
        ("hand_percussion", R(r"drums (wood|clav|shaker)")),
        ("snare_drum", R(r"drums (nasty snare|nasty rim)")),
        ("kick_drum", R(r"nasty bass")),
        ("laser_scifi", R(r"zap|warp")),
        ("drum_loop", R(r"^beats ")),
        ("crowd", R(r"applause|raving crowd")),
        ("clock_tick", R(r"metronome")),
        ("explosion", R(r"explode")),
        ("", R(r"^effects |misc (hit|bass!|buzz!|undefined|electric ping|breath)")),
    ],
    "scorched3d-data": [
        ("", R(r"\bmusic\b|movement (elevate|power|turn|movement)|\bbattery\b|misc (play|text|camera|para|extralife|fight4life|lockon|riftcollapse)|shield|explosions (empsmall|gas|acid|radiation|bhit|dirt|thud|crunch|gloop)")),
        ("gunshot", R(r"shoot (small|medium|large|xlarge|tracer|machinegun|shotgun|tripleshot)")),
        ("insect", R(r"explosions bees")),
        ("thunder", R(r"explosions (thunder|lightning)")),
        ("explosion", R(r"explosions|shoot launch|misc rocket")),
        ("laser_scifi", R(r"laser|flare|teleport|beamup|beep")),
        ("bird_song", R(r"birdchirp|birds")),
        ("water", R(r"lava|splash")),
        ("vehicle_engine", R(r"tankmove")),
        ("crowd", R(r"cheeringloop|citysounds")),
        ("machine", R(r"factoryloop|nuclearloop")),
    ],
    "widelands-data": [
        ("music", R(r"^music ")),
        ("bird_song", R(r"animals bird")),
        ("insect", R(r"crickets")),
        ("deer", R(r"moose|stag")),
        ("pig", R(r"boar")),
        ("wood_chop", R(r"woodcutting|tree falling|blackwood")),
        ("hammer_metal", R(r"hammering|smith|toolsmith|sharpening|metal (goldping|ironping)|stonecutting|cutting stonecutter|falling tools|mortar|stonegrind")),
        ("saw", R(r"saw")),
        ("machine", R(r"mill |weaving|weaver|goldspin|metal furnace|metal fizzle")),
        ("crowd", R(r"taverns (inn|tavern|biginn)")),
        ("water", R(r"beerbubble|winebubble")),
        ("", R(r"scythe|taverns (ration|meal)|lobby|click|message|military|construction|fisher")),
    ],
    "scratch": [
        ("music", R(r"music loops (cave|medieval|triumph|garden|jungle|eggs|techno|dripdrop)")),
        ("mallet_percussion", R(r"music loops xylo")),
        ("guitar", R(r"music loops guitarchords")),
        ("beatbox", R(r"humanbeatbox")),
        ("drum_loop", R(r"music loops")),
        ("singing", R(r"^vocals (?!beatbox)")),
        ("cymbal_hihat", R(r"cymbal")),
        ("hand_percussion", R(r"shaker")),
        ("snare_drum", R(r"drumbuzz")),
        ("electronic_blip", R(r"computerbeeps|peculiar|dirtywhir")),
        ("horse", R(r"horsegallop")),
        ("", R(r"electronic screech|\bslurp\b|balloonscratch|rattle|\bpop\b|tambura|suspense|\bchord\b")),
    ],
    "openttd-opensfx": [
        ("", R(r"unused|morse|good year|bad year|oooh|toyland (sugar|toy factory|toffee|plastic)|splat|breakdown|building bridge")),
        ("horn_siren", R(r"factory whistle|ship horn|ferry horn")),
        ("train", R(r"train|steam|maglev|monorail|level crossing")),
        ("aircraft", R(r"plane|jet|helicopter")),
        ("vehicle_engine", R(r"bus|truck")),
        ("horn_siren", R(r"car horn")),
        ("wood_chop", R(r"tree")),
        ("crash_break", R(r"crash")),
        ("coins_cash", R(r"cash till")),
        ("electronic_blip", R(r"\bbeep\b")),
        ("machine", R(r"mining machinery|electric sparking|jackhammer")),
        ("bird_song", R(r"tropical bird")),
        ("big_cat_roar", R(r"lion roar")),
        ("monkey", R(r"monkeys")),
        ("saw", R(r"sawmill|chainsaw")),
        ("wood_chop", R(r"tree")),
        ("water", R(r"bubble")),
    ],
    "tuxpaint-stamps-default": [
        ("", R(r"symbols|seasonal (hanukkah|christmas)|town (roadsigns|flags)|military|food|space|household (dishes|arttools)|hobbies camera|bathyscape|faces|rubberduck")),
        ("bird_song", R(r"animals birds (blackbird|lark|cuckoo|quetzal|tucan|heron|nandou|penguin)")),
        ("bat", R(r"halloween bat")),
        ("insect", R(r"halloween spider")),
        ("horn_siren", R(r"firetruck")),
        ("explosion", R(r"fireworks")),
        ("thunder", R(r"lightningbolt")),
        ("drum_loop", R(r"drumkit")),
        ("", R(r"halloween ghost|lizards|iguana|ferret|badger|wombat|koala|camel|dromedary|giraffe|marsupials")),
    ],
    "qabcs-data": [
        ("", R(r"^all noises (" + "|".join(re.escape(w.replace("_", " ").replace("-", " ")) for w in sorted(QABCS_SKIP)) + r")$")),
        ("bird_song", R(r"^all noises (bird|sparrow|iora|quetzal)$")),
        ("hand_percussion", R(r"^all noises (maracas|cuica|slit drum|spoons|ipu)$")),
        ("tom_drum", R(r"timpani")),
        ("drum_loop", R(r"^all noises drums$")),
        ("kick_drum", R(r"bass drum")),
        ("bowed_strings", R(r"^all noises (violin|cello|gamba|erhu|rabel)$")),
        ("vehicle_engine", R(r"excavator|tractor")),
    ],
}

# Family stripping: trailing digits / variant markers
_FAM_RE = re.compile(r"([ _\-\.]*(\d+|[a-z]))?$")


def family_of(stem):
    s = stem.lower()
    s = re.sub(r"[ _\-\.]*\d+$", "", s)          # foo_01, foo-2, foo.3, foo2
    s = re.sub(r"[ _\-\.]*\d+$", "", s)          # bird2_00 -> bird
    s = re.sub(r"[_\-](hard|soft|miss|big|small|sml|long)$", "", s)
    s = re.sub(r"[ _\-\.]*\d+$", "", s)
    return s or stem.lower()


def key_of(rel):
    k = rel.lower()
    k = re.sub(r"\.(wav|ogg|flac|mp3)$", "", k)
    k = re.sub(r"[^a-z0-9!]+", " ", k)
    k = re.sub(r"(?<=[a-z])(?=\d)", " ", k)   # bird2 -> bird 2
    return k.strip()


def classify(pkg, rel):
    key = key_of(rel)
    for cat, rx in PACKAGE_RULES.get(pkg, []):
        if rx.search(key):
            return cat or None
    for cat, rx in GENERAL_RULES:
        if rx.search(key):
            return cat
    return None


# --------------------------------------------------------------------------
# Source enumeration
# --------------------------------------------------------------------------

PKG_ROOTS = {
    "qabcs-data": "usr/share/qabcs/abcs",
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "sonic-pi-samples": "usr/share/sonic-pi/samples",
    "scratch": "usr/share/scratch/Media/Sounds",
    "minetest-data": "usr/share/games/minetest/games/minetest_game/mods",
    "widelands-data": "usr/share/games/widelands/data",
    "scorched3d-data": "usr/share/games/scorched3d/data/globalmods",
    "lmms-common": "usr/share/lmms/samples",
    "wesnoth-1.16-data": "usr/share/games/wesnoth/1.16",
}

SPEECH_PER_LANG_QABCS = 8
SPEECH_PER_LANG_TUX = 4
TUX_LANG_RE = re.compile(r"_desc(_[a-z]{2,3}(_[A-Z]{2})?)?\.(ogg|wav)$")
TUX_NAME_LANG_RE = re.compile(r"_([a-z]{2,3})(_[A-Z]{2})?\.(ogg|wav)$")


def stable_hash(s):
    return int(hashlib.sha1(s.encode("utf-8")).hexdigest()[:12], 16)


def walk_audio(root):
    out = []
    for d, _dirs, files in os.walk(root):
        for f in files:
            if f.lower().endswith(AUDIO_EXT):
                out.append(os.path.join(d, f))
    return sorted(out)


def enumerate_sources(extract, cache):
    """Returns list of dicts: package, src (path or (catfile, off, size)), rel,
    label, family."""
    items = []
    skipped = Counter()
    for pkg, sub in PKG_ROOTS.items():
        root = os.path.join(extract, pkg, sub)
        if not os.path.isdir(root):
            log(f"  !! {pkg}: {root} missing")
            continue
        files = walk_audio(root)
        speech_seen = Counter()
        for path in files:
            rel = os.path.relpath(path, root)
            stem = os.path.splitext(os.path.basename(rel))[0]
            folder = os.path.dirname(rel)
            label, fam = None, None
            if pkg == "qabcs-data":
                parts = rel.split(os.sep)
                if parts[0] != "all" and len(parts) >= 3 and parts[2] == "words":
                    lang = parts[0]
                    # deterministic pick of N words per language (one speaker
                    # per language -> group per language)
                    if stable_hash(rel) % 10 < 2 and speech_seen[lang] < SPEECH_PER_LANG_QABCS:
                        speech_seen[lang] += 1
                        label, fam = "speech", f"words-{lang}"
                    else:
                        skipped["qabcs speech (subsampled)"] += 1
                        continue
                elif parts[0] != "all":
                    skipped["qabcs alphabet"] += 1
                    continue
            elif pkg == "tuxpaint-stamps-default":
                m = TUX_LANG_RE.search(os.path.basename(rel))
                if m:
                    lang = (m.group(1) or "_en").lstrip("_")
                    if stable_hash(rel) % 10 < 3 and speech_seen[lang] < SPEECH_PER_LANG_TUX:
                        speech_seen[lang] += 1
                        label, fam = "speech", f"desc-{lang}"
                    else:
                        skipped["tuxpaint speech (subsampled)"] += 1
                        continue
                elif TUX_NAME_LANG_RE.search(os.path.basename(rel)):
                    skipped["tuxpaint spoken names"] += 1
                    continue
            if label is None:
                label = classify(pkg, rel)
                if label is None:
                    skipped[f"{pkg} unlabelled"] += 1
                    continue
                fam = family_of(stem)
                if pkg == "wesnoth-1.16-data":
                    # creature sounds: one group per creature/weapon
                    fam = re.split(r"[-_]", stem.lower())[0]
                    if "horn-signals" in rel:
                        fam = "horn-signals"
                    if "ambient" in rel:
                        fam = "ambient-" + family_of(stem)
                elif pkg == "minetest-data":
                    fam = re.sub(r"^(default|fire|doors|env_sounds|tnt|carts|xpanes)_", "", fam)
                elif pkg == "sonic-pi-samples" and stem.startswith("tabla_"):
                    fam = "tabla"           # one tabla recording session
                elif pkg == "sonic-pi-samples" and stem.startswith("mehackit_robot"):
                    fam = "mehackit_robot"
                fam = f"{folder.replace(os.sep, '/')}/{fam}" if folder else fam
            items.append(dict(package=pkg, src=path, rel=rel, label=label,
                              family=f"{pkg}:{fam}"))
    # OpenTTD opensfx.cat
    cat = os.path.join(extract, "openttd-opensfx/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
    if os.path.exists(cat):
        with open(cat, "rb") as fh:
            data = fh.read()
        n = (struct.unpack("<I", data[:4])[0] & 0x7FFFFFFF) // 8
        for i in range(n):
            off, size = struct.unpack("<II", data[8 * i:8 * i + 8])
            off &= 0x7FFFFFFF
            nl = data[off]
            desc = data[off + 1:off + 1 + nl].rstrip(b"\0").decode("utf-8", "replace")
            m = re.match(r'"([^"]+)"', desc)
            title = m.group(1) if m else f"sound{i}"
            label = classify("openttd-opensfx", title)
            if label is None:
                skipped["openttd-opensfx unlabelled"] += 1
                continue
            m2 = re.search(r'Original "([^"]+)"', desc)
            fam = m2.group(1) if m2 else title
            lic = re.search(r"License: ([^.]+(?:\.\d)?[^.]*)\.", desc)
            items.append(dict(package="openttd-opensfx",
                              src=("cat", cat, off + 1 + nl, size - 1 - nl),
                              rel=f"opensfx.cat#{i:02d} {title.replace('/', '-')}", label=label,
                              family=f"openttd-opensfx:{family_of(fam)}",
                              note=(lic.group(1) if lic else "")))
    else:
        log("  !! openttd-opensfx: opensfx.cat missing")
    # rendered / synthesised material
    for d, pkg in ((os.path.join(cache, "fluidsynth"), "fluid-soundfont-gm"),
                   (os.path.join(cache, "espeak"), "espeak-ng")):
        meta = os.path.join(d, "meta.json")
        if os.path.exists(meta):
            for e in json.load(open(meta)):
                items.append(dict(package=pkg, src=os.path.join(d, e["file"]),
                                  rel=e["file"], label=e["label"],
                                  family=f"{pkg}:{e['family']}"))
        else:
            log(f"  !! {pkg}: no rendered material in {d}")
    return items, skipped


# --------------------------------------------------------------------------
# Rendering: fluidsynth instrument notes, espeak-ng speech
# --------------------------------------------------------------------------

# (program, label, name)  -- GM program numbers, 0-based
GM_PROGRAMS = [
    (0, "piano", "acoustic_grand"), (1, "piano", "bright_acoustic"), (4, "piano", "electric_piano1"),
    (6, "piano", "harpsichord"),
    (8, "bell_chime", "celesta"), (9, "bell_chime", "glockenspiel"), (14, "bell_chime", "tubular_bells"),
    (11, "mallet_percussion", "vibraphone"), (12, "mallet_percussion", "marimba"), (13, "mallet_percussion", "xylophone"),
    (16, "organ_accordion", "drawbar_organ"), (19, "organ_accordion", "church_organ"),
    (21, "organ_accordion", "accordion"), (22, "organ_accordion", "harmonica"),
    (24, "guitar", "nylon_guitar"), (25, "guitar", "steel_guitar"), (27, "guitar", "clean_electric_guitar"),
    (29, "guitar", "overdriven_guitar"), (30, "guitar", "distortion_guitar"),
    (32, "bass_guitar", "acoustic_bass"), (33, "bass_guitar", "finger_bass"), (35, "bass_guitar", "fretless_bass"),
    (36, "bass_guitar", "slap_bass"), (38, "synth_bass", "synth_bass1"), (39, "synth_bass", "synth_bass2"),
    (40, "bowed_strings", "violin"), (41, "bowed_strings", "viola"), (42, "bowed_strings", "cello"),
    (43, "bowed_strings", "contrabass"), (45, "bowed_strings", "pizzicato"), (48, "bowed_strings", "string_ensemble"),
    (110, "bowed_strings", "fiddle"),
    (46, "plucked_strings", "harp"), (104, "plucked_strings", "sitar"), (105, "plucked_strings", "banjo"),
    (107, "plucked_strings", "koto"), (108, "plucked_strings", "kalimba"),
    (52, "singing", "choir_aahs"), (53, "singing", "voice_oohs"),
    (56, "brass", "trumpet"), (57, "brass", "trombone"), (58, "brass", "tuba"), (60, "brass", "french_horn"),
    (61, "brass", "brass_section"),
    (64, "saxophone", "soprano_sax"), (65, "saxophone", "alto_sax"), (66, "saxophone", "tenor_sax"),
    (67, "saxophone", "baritone_sax"),
    (68, "woodwind", "oboe"), (70, "woodwind", "bassoon"), (71, "woodwind", "clarinet"), (69, "woodwind", "english_horn"),
    (109, "organ_accordion", "bagpipe"),
    (72, "flute", "piccolo"), (73, "flute", "flute"), (74, "flute", "recorder"), (75, "flute", "pan_flute"),
    (77, "flute", "shakuhachi"), (79, "flute", "ocarina"),
    (80, "synth_lead", "square_lead"), (81, "synth_lead", "saw_lead"), (84, "synth_lead", "charang"),
    (87, "synth_lead", "bass_lead"),
    (88, "synth_pad", "new_age_pad"), (89, "synth_pad", "warm_pad"), (91, "synth_pad", "choir_pad"),
    (94, "synth_pad", "halo_pad"),
    (114, "mallet_percussion", "steel_drums"), (112, "bell_chime", "tinkle_bell"), (113, "bell_chime", "agogo"),
    (116, "tom_drum", "taiko"), (117, "tom_drum", "melodic_tom"), (47, "tom_drum", "timpani"),
    (115, "hand_percussion", "woodblock"),
]
# GM drum-kit notes on channel 10: (label, name, [notes])
GM_DRUMS = [
    ("kick_drum", "kit_kick", [35, 36]), ("snare_drum", "kit_snare", [38, 40, 37]),
    ("tom_drum", "kit_toms", [41, 43, 45, 47, 48, 50]), ("cymbal_hihat", "kit_hihat", [42, 44, 46]),
    ("cymbal_hihat", "kit_cymbals", [49, 51, 52, 55, 57]), ("hand_percussion", "kit_latin", [60, 61, 62, 63, 64, 69, 70, 75, 76]),
    ("clap_snap", "kit_clap", [39]), ("bell_chime", "kit_cowbell", [56, 81]),
]


def _vlq(n):
    b = [n & 0x7F]
    n >>= 7
    while n:
        b.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(b))


def write_midi(path, events, tpq=480, tempo_us=500000):
    """events: list of (abs_tick, bytes). Writes a format-0 SMF."""
    events = sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
    trk = bytearray(b"\x00\xFF\x51\x03" + tempo_us.to_bytes(3, "big"))
    last = 0
    for t, msg in events:
        trk += _vlq(t - last) + msg
        last = t
    trk += b"\x00\xFF\x2F\x00"
    with open(path, "wb") as fh:
        fh.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq))
        fh.write(b"MTrk" + struct.pack(">I", len(trk)) + trk)


def midi_notes(ch, program, notes):
    """notes: list of (start_beat, dur_beat, pitch, vel)."""
    ev = []
    if program is not None:
        ev.append((0, bytes([0xC0 | ch, program])))
    for st, du, p, v in notes:
        ev.append((int(st * 480), bytes([0x90 | ch, p, v])))
        ev.append((int((st + du) * 480), bytes([0x80 | ch, p, 0])))
    return ev


def find_sf2(extract):
    for p in ("/usr/share/sounds/sf2/FluidR3_GM.sf2",
              os.path.join(extract, "fluid-soundfont-gm/usr/share/sounds/sf2/FluidR3_GM.sf2")):
        if os.path.exists(p):
            return p
    return None


def render_fluidsynth(extract, cache):
    out = os.path.join(cache, "fluidsynth")
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        log("  fluidsynth: cached")
        return
    sf2 = find_sf2(extract)
    if not sf2 or not shutil.which("fluidsynth"):
        log("  !! fluidsynth or FluidR3_GM.sf2 missing: skipping instrument rendering")
        return
    os.makedirs(out, exist_ok=True)
    meta = []
    jobs = []
    for prog, label, name in GM_PROGRAMS:
        low = prog in (32, 33, 35, 36, 38, 39, 43, 58, 70, 87, 116, 47)
        base = 40 if low else 60
        if prog in (72, 9, 112):
            base = 72
        variants = {
            "note": [(0, 1.5, base + 7, 100)],
            "phrase": [(0, 0.5, base, 90), (0.5, 0.5, base + 4, 95), (1.0, 0.5, base + 7, 100),
                       (1.5, 1.0, base + 12, 105)],
            "chord": [(0, 2.0, base - 5, 80), (0, 2.0, base - 1, 80), (0, 2.0, base + 2, 80)],
        }
        for vname, notes in variants.items():
            jobs.append((f"{prog:03d}_{name}_{vname}", midi_notes(0, prog, notes), label, f"gm{prog:03d}-{name}"))
    for label, name, notes in GM_DRUMS:
        pat = [(i * 0.25, 0.2, n, 90 + (i % 3) * 10) for i, n in enumerate(notes * 2)]
        jobs.append((f"drum_{name}_pattern", midi_notes(9, None, pat), label, f"gmdrum-{name}"))
        jobs.append((f"drum_{name}_hit", midi_notes(9, None, [(0, 0.5, notes[0], 110)]), label, f"gmdrum-{name}"))
    for fname, ev, label, fam in jobs:
        mid = os.path.join(out, fname + ".mid")
        wav = os.path.join(out, fname + ".wav")
        write_midi(mid, ev)
        subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", "44100",
                        "-F", wav, sf2, mid], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.remove(mid)
        meta.append(dict(file=fname + ".wav", label=label, family=fam))
    json.dump(meta, open(meta_path, "w"), indent=0)
    log(f"  fluidsynth: rendered {len(meta)} files")


ESPEAK_VOICES = ["en-us+m3", "en-gb+f2", "en-gb-scotland+m1", "de+f3", "fr-fr+m2", "es+f1", "it+m4",
                 "pt+f4", "nl+m1", "pl+f2", "ru+m2", "sv+f3", "fi+m5", "cs+f1"]
ESPEAK_TEXT = {
    "en": ["The quick brown fox jumps over the lazy dog.",
           "Please put the kettle on, it is going to rain this afternoon.",
           "Seven green bottles were standing on the old wooden shelf."],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.",
           "Heute Abend gehen wir zusammen ins Kino."],
    "fr": ["Le petit chat dort tranquillement sur le canapé.",
           "Il fait très beau aujourd'hui, allons au marché."],
    "es": ["El perro corre rápidamente por el parque verde.",
           "Mañana vamos a visitar a mis abuelos en la ciudad."],
    "it": ["Il treno per Roma parte alle otto in punto.", "Mi piace molto la pizza con i funghi."],
    "pt": ["O menino jogou a bola por cima do muro.", "Amanhã vai chover durante toda a manhã."],
    "nl": ["De fiets staat achter het oude huis.", "Wij eten vanavond soep met brood."],
    "pl": ["Kot siedzi na oknie i patrzy na ptaki.", "Jutro pojedziemy nad morze."],
    "ru": ["Сегодня очень холодно на улице.", "Мы пойдём гулять в парк после обеда."],
    "sv": ["Solen skiner över den lilla sjön.", "Vi ska baka bullar i morgon."],
    "fi": ["Kissa nukkuu sohvalla koko päivän.", "Huomenna menemme saunaan."],
    "cs": ["Pes běží přes zelenou louku.", "Zítra pojedeme vlakem do Prahy."],
}


def render_espeak(cache):
    out = os.path.join(cache, "espeak")
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        log("  espeak-ng: cached")
        return
    if not shutil.which("espeak-ng"):
        log("  !! espeak-ng missing: skipping synthetic speech")
        return
    os.makedirs(out, exist_ok=True)
    meta = []
    for vi, voice in enumerate(ESPEAK_VOICES):
        lang = voice.split("+")[0].split("-")[0]
        for ti, text in enumerate(ESPEAK_TEXT[lang]):
            fname = f"{voice.replace('+', '_')}_{ti}.wav"
            speed = 150 + 15 * ((vi + ti) % 3)
            pitch = 35 + 10 * (vi % 4)
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                            "-w", os.path.join(out, fname), text], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            meta.append(dict(file=fname, label="speech_synthetic", family=f"voice-{voice}"))
    json.dump(meta, open(meta_path, "w"), indent=0)
    log(f"  espeak-ng: rendered {len(meta)} files")


# --------------------------------------------------------------------------
# Audio processing
# --------------------------------------------------------------------------

def read_any(src):
    if isinstance(src, tuple):
        _, cat, off, size = src
        with open(cat, "rb") as fh:
            fh.seek(off)
            buf = fh.read(size)
        i = buf.find(b"RIFF")
        if i < 0:
            raise ValueError("no RIFF in cat entry")
        f = sf.SoundFile(io.BytesIO(buf[i:]))
    else:
        f = sf.SoundFile(src)
    with f:
        sr = f.samplerate
        n = f.frames if f.frames and f.frames > 0 else None
        nread = int(MAX_READ_SEC * sr)
        if n is not None:
            nread = min(nread, n)
        x = f.read(frames=nread, dtype="float32", always_2d=True)
    return x, sr


def process(item):
    """Returns (item, int16 array or None, reason)."""
    try:
        x, sr = read_any(item["src"])
    except Exception as e:  # noqa: BLE001
        return item, None, f"decode error: {type(e).__name__}: {e}"[:200]
    if x.size == 0:
        return item, None, "empty"
    x = x.mean(axis=1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        return item, None, "non-finite samples"
    peak0 = np.max(np.abs(x))
    if peak0 < 10 ** (-60 / 20):
        return item, None, "near-silent"
    # clipping check on the original-rate signal
    clip_frac = np.mean(np.abs(x) >= 0.999 * max(peak0, 0.99)) if peak0 >= 0.99 else 0.0
    if clip_frac > 0.02:
        return item, None, "clipped"
    if sr != SR:
        g = gcd(int(sr), SR)
        x = resample_poly(x, SR // g, int(sr) // g)
    peak = np.max(np.abs(x))
    thr = peak * 10 ** (TRIM_DB / 20)
    # trim on a 5 ms-smoothed envelope so isolated zero crossings don't matter
    idx = np.flatnonzero(np.abs(x) > thr)
    if idx.size == 0:
        return item, None, "near-silent"
    x = x[idx[0]: idx[-1] + 1]
    if len(x) < MIN_SEC * SR:
        return item, None, "too short"
    x = x[: int(MAX_SEC * SR)]
    rms = np.sqrt(np.mean(x ** 2))
    if rms < 10 ** (-55 / 20):
        return item, None, "near-silent"
    # broken: (almost) constant or DC-only signal
    if np.std(x) < 1e-4 or np.mean(np.abs(np.diff(x))) < 1e-6:
        return item, None, "broken/DC"
    y = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    return item, y, "ok"


def fingerprint(y):
    """Length-normalised log-band spectrogram, 24 bands x 32 time bins."""
    x = y.astype(np.float32) / 32768.0
    n_fft, hop = 512, 256
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    nfr = 1 + (len(x) - n_fft) // hop
    fr = np.lib.stride_tricks.as_strided(x, (nfr, n_fft), (x.strides[0] * hop, x.strides[0]))
    spec = np.abs(np.fft.rfft(fr * np.hanning(n_fft), axis=1)) ** 2
    edges = np.unique(np.geomspace(2, n_fft // 2 + 1, 25).astype(int))
    bands = np.stack([spec[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    lb = np.log10(bands + 1e-10)
    tb = np.linspace(0, nfr, 33).astype(int)
    grid = np.stack([lb[a:max(b, a + 1)].mean(0) for a, b in zip(tb[:-1], tb[1:])], 0)
    v = grid.ravel() - grid.mean()
    nv = np.linalg.norm(v)
    return v / nv if nv > 0 else v


class UF:
    def __init__(self):
        self.p = {}

    def find(self, a):
        self.p.setdefault(a, a)
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.p[rb] = ra


def safe(s):
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()[:40]


PKG_SHORT = {"qabcs-data": "qabcs", "openttd-opensfx": "opensfx", "tuxpaint-stamps-default": "tuxpaint",
             "sonic-pi-samples": "sonicpi", "scratch": "scratch", "minetest-data": "minetest",
             "widelands-data": "widelands", "scorched3d-data": "scorched3d", "lmms-common": "lmms",
             "wesnoth-1.16-data": "wesnoth", "fluid-soundfont-gm": "fluidgm", "espeak-ng": "espeak"}


def assign_splits(clips):
    groups = sorted({c["group"] for c in clips})
    h = {g: stable_hash("macs-split:" + g) for g in groups}
    split = {g: ("heldout" if h[g] % 1000 < HELDOUT_PERMILLE else "train") for g in groups}
    cat_groups = defaultdict(set)
    for c in clips:
        cat_groups[c["label"]].add(c["group"])
    # (b) never hold out every group of a category (keep train data)
    for cat in sorted(cat_groups):
        gs = sorted(cat_groups[cat], key=lambda g: h[g])
        if all(split[g] == "heldout" for g in gs):
            split[gs[-1]] = "train"
    # (a) categories with >=3 groups get at least one held-out group
    for cat in sorted(cat_groups):
        gs = sorted(cat_groups[cat], key=lambda g: h[g])
        if len(gs) >= 3 and not any(split[g] == "heldout" for g in gs):
            # pick lowest-hash group that doesn't leave another category train-less
            for g in gs:
                ok = True
                for cat2, gs2 in cat_groups.items():
                    if g in gs2 and cat2 != cat and all(split[x] == "heldout" or x == g for x in gs2):
                        ok = False
                if ok:
                    split[g] = "heldout"
                    break
    return split


def npz_selection(clips, kmax):
    """Up to kmax clips per group, round-robin over the group's labels, in a
    deterministic (hash) order."""
    by_group = defaultdict(lambda: defaultdict(list))
    for c in clips:
        by_group[c["group"]][c["label"]].append(c)
    sel = []
    for g in sorted(by_group):
        labs = {lab: sorted(cs, key=lambda c: c["sha1"]) for lab, cs in sorted(by_group[g].items())}
        picked = []
        while len(picked) < kmax and any(labs.values()):
            for lab in list(labs):
                if labs[lab] and len(picked) < kmax:
                    picked.append(labs[lab].pop(0))
        sel.extend(picked)
    order = {id(c): i for i, c in enumerate(clips)}
    return sorted(sel, key=lambda c: order[id(c)])


def save_npz(path, sel, cap):
    n = int(cap * SR)
    arrs = [c["audio"][:n] for c in sel]
    offsets = np.zeros(len(arrs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrs])
    np.savez_compressed(
        path, audio=np.concatenate(arrs), offsets=offsets,
        labels=np.array([c["label"] for c in sel]), groups=np.array([c["group"] for c in sel]),
        splits=np.array([c["split"] for c in sel]), paths=np.array([c["path"] for c in sel]),
        sample_rate=np.int64(SR), clip_cap_seconds=np.float64(cap))
    return os.path.getsize(path), int(offsets[-1])


def write_npz(path, clips):
    """Everything if it fits in NPZ_LIMIT_BYTES; otherwise shorten clips (>=4 s)
    and cap clips per group, preferring to keep as many groups/clips as possible."""
    size, nsamp = save_npz(path, clips, MAX_SEC)
    log(f"  all {len(clips)} clips, cap {MAX_SEC}s: {size / 1e6:.1f} MB")
    if size <= NPZ_LIMIT_BYTES:
        return clips, MAX_SEC, None, size
    bytes_per_sample = size / nsamp
    budget = 0.97 * NPZ_LIMIT_BYTES / bytes_per_sample
    best = None
    for cap in (6.0, 5.0, 4.0, 3.5, 3.0):
        for kmax in (1000, 16, 12, 10, 8, 6, 5, 4, 3, 2, 1):
            sel = npz_selection(clips, kmax)
            ns = sum(min(len(c["audio"]), int(cap * SR)) for c in sel)
            if ns <= budget:
                if best is None or len(sel) > len(best[0]) * 1.15:
                    best = (sel, cap, kmax)
                break
    sel, cap, kmax = best
    while True:
        size, nsamp = save_npz(path, sel, cap)
        log(f"  {len(sel)} clips (max {kmax}/group), cap {cap}s: {size / 1e6:.1f} MB")
        if size <= NPZ_LIMIT_BYTES:
            return sel, cap, (kmax if kmax < 1000 else None), size
        if kmax > 1:
            kmax = 16 if kmax >= 1000 else kmax - 1
        else:
            cap = max(1.0, cap - 0.5)
        sel = npz_selection(clips, kmax)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    t0 = time.time()
    os.makedirs(args.cache, exist_ok=True)

    log("[1/6] rendering instrument notes (fluidsynth) and speech (espeak-ng)")
    render_fluidsynth(args.extract, args.cache)
    render_espeak(args.cache)

    log("[2/6] enumerating and labelling source files")
    items, skipped = enumerate_sources(args.extract, args.cache)
    items.sort(key=lambda it: (it["package"], it["rel"]))
    log(f"  {len(items)} candidate files; skipped by rule: {sum(skipped.values())}")
    for k, v in sorted(skipped.items()):
        log(f"    - {k}: {v}")

    log(f"[3/6] decoding / resampling to {SR} Hz mono ({args.workers} workers)")
    results = []
    reasons = Counter()
    failures = []
    with Pool(args.workers) as pool:
        for i, (it, y, why) in enumerate(pool.imap(process, items, chunksize=4)):
            reasons[why] += 1
            if y is None:
                failures.append((it["package"], it["rel"], why))
            else:
                results.append((it, y))
            if (i + 1) % 200 == 0 or i + 1 == len(items):
                log(f"  {i + 1}/{len(items)} processed, {len(results)} kept ({time.time() - t0:.0f}s)")
    log("  outcome: " + ", ".join(f"{k}={v}" for k, v in reasons.most_common()))

    log("[4/6] de-duplicating and grouping")
    seen = {}
    clips = []
    ndup = 0
    for it, y in results:
        hsh = hashlib.sha1(y.tobytes()).hexdigest()
        if hsh in seen:
            ndup += 1
            failures.append((it["package"], it["rel"], f"exact duplicate of {seen[hsh]}"))
            continue
        seen[hsh] = f"{it['package']}:{it['rel']}"
        clips.append(dict(it, audio=y, sha1=hsh))
    log(f"  removed {ndup} exact duplicates")
    uf = UF()
    for c in clips:
        uf.find(c["family"])
    fps = np.stack([fingerprint(c["audio"]) for c in clips])
    durs = np.array([len(c["audio"]) for c in clips], dtype=np.float64)
    sim = fps @ fps.T
    ratio = durs[:, None] / durs[None, :]
    close = (sim > 0.975) & (ratio > 0.8) & (ratio < 1.25)
    # rendered material (fluidsynth / espeak) comes from identical MIDI / text
    # templates, so its time structure matches across programs: never merge
    # rendered-vs-rendered; their family (program / voice) is the group.
    rendered = np.array([c["package"] in ("fluid-soundfont-gm", "espeak-ng") for c in clips])
    close &= ~(rendered[:, None] & rendered[None, :])
    merges = []
    ii, jj = np.nonzero(np.triu(close, 1))
    for i, j in zip(ii, jj):
        a, b = clips[i]["family"], clips[j]["family"]
        if uf.find(a) != uf.find(b):
            merges.append((a, b, float(sim[i, j])))
            uf.union(a, b)
    log(f"  near-duplicate merges across families: {len(merges)}")
    for a, b, s in merges[:40]:
        log(f"    {a}  ~  {b}  ({s:.3f})")
    for c in clips:
        c["group"] = uf.find(c["family"])

    split = assign_splits(clips)
    for c in clips:
        c["split"] = split[c["group"]]

    log("[5/6] writing clips and manifest")
    out = args.outdir
    for sub in ("clips",):
        if os.path.isdir(os.path.join(out, sub)):
            shutil.rmtree(os.path.join(out, sub))
    os.makedirs(out, exist_ok=True)
    clips.sort(key=lambda c: (c["split"], c["label"], c["package"], c["rel"]))
    rows = []
    used_ids = set()
    for c in clips:
        stem = os.path.splitext(os.path.basename(c["rel"]))[0]
        cid = f"{PKG_SHORT.get(c['package'], safe(c['package']))}-{safe(stem)}-{c['sha1'][:6]}"
        assert cid not in used_ids
        used_ids.add(cid)
        rel = f"clips/{c['split']}/{c['label']}/{cid}.flac"
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        sf.write(p, c["audio"], SR, subtype="PCM_16", format="FLAC")
        c["path"] = rel
        rows.append(dict(path=rel, label=c["label"], group=c["group"], split=c["split"],
                         duration=f"{len(c['audio']) / SR:.3f}", package=c["package"],
                         source=c["rel"]))
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "group", "split", "duration", "package"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "sources.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "package", "source"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    log("[6/6] writing corpus.npz")
    npz_path = os.path.join(out, "corpus.npz")
    npz_sel, cap, kmax, size = write_npz(npz_path, clips)

    # summary
    summ = {"n_clips": len(clips), "npz_bytes": size, "npz_clip_cap_seconds": cap,
            "npz_max_clips_per_group": kmax, "npz_clips": len(npz_sel),
            "npz_seconds": round(sum(min(len(c["audio"]), int(cap * SR)) for c in npz_sel) / SR, 1),
            "build_seconds": round(time.time() - t0, 1), "exact_duplicates_removed": ndup,
            "near_duplicate_merges": [[a, b, round(s, 3)] for a, b, s in merges],
            "outcomes": dict(reasons), "skipped_by_rule": dict(skipped), "splits": {}}
    for sp in ("train", "heldout"):
        cs = [c for c in clips if c["split"] == sp]
        summ["splits"][sp] = {
            "clips": len(cs), "categories": len({c["label"] for c in cs}),
            "groups": len({c["group"] for c in cs}),
            "hours": round(sum(len(c["audio"]) for c in cs) / SR / 3600, 3)}
    cats = sorted({c["label"] for c in clips})
    summ["categories"] = {
        cat: {sp: sum(1 for c in clips if c["label"] == cat and c["split"] == sp) for sp in ("train", "heldout")}
        | {"groups": len({c["group"] for c in clips if c["label"] == cat})} for cat in cats}
    summ["packages"] = dict(Counter(c["package"] for c in clips))
    summ["failures"] = [list(f) for f in failures if not f[2].startswith("exact duplicate")]
    json.dump(summ, open(os.path.join(out, "summary.json"), "w"), indent=1, ensure_ascii=False)
    log("")
    log(f"done in {time.time() - t0:.0f}s: {len(clips)} clips, {len(cats)} categories, "
        f"{sum(len(c['audio']) for c in clips) / SR / 60:.1f} min audio")
    for sp, d in summ["splits"].items():
        log(f"  {sp:8s} {d['clips']:5d} clips  {d['categories']:3d} categories  {d['groups']:4d} groups  "
            f"{d['hours'] * 60:.1f} min")
    log(f"  corpus.npz {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB): {len(npz_sel)} clips, per-clip cap {cap}s, "
        f"max {kmax} clips per group, {summ['npz_seconds'] / 60:.1f} min")
    log("  category: train/heldout clips (groups)")
    for cat in cats:
        d = summ["categories"][cat]
        log(f"    {cat:20s} {d['train']:4d} / {d['heldout']:3d}  ({d['groups']})")


if __name__ == "__main__":
    main()
