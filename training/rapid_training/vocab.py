"""The domain vocabulary the data set draws and its captions name: fashion items, colours, patterns,
fabric looks, and dishes, each with its English and Chinese words.

Every category and colour word of the project's knowledge graph (`knowledge/graphs/domain.tsv`, the
words the scheduler's requests use) is a word of one drawn class here, and
`tests/test_vocab.py` checks that against the graph, so a word added there without a drawing here
fails. Several words may name one drawn class ("parka" and "trench coat" are drawn as a coat): the
class is what a picture can show at 64 px, the words are what people type.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """A fashion item: the class a picture shows, the words that name it, and where its shapes come from."""

    name: str
    en: tuple[str, ...]
    zh: tuple[str, ...]
    # Fashion-MNIST label whose images are this item, if any.
    fmnist: int | None = None
    # Iconify icons (set:name) whose shapes are this item; colour emoji and silhouettes alike, since only
    # their mask and shading are used.
    icons: tuple[str, ...] = ()


EMOJI_SETS = ("noto", "fluent-emoji-flat", "twemoji")


def _emoji(*names: str) -> tuple[str, ...]:
    return tuple(f"{s}:{n}" for n in names for s in EMOJI_SETS)


def _glyphs(*names: str) -> tuple[str, ...]:
    return tuple(f"game-icons:{n}" for n in names)


ITEMS: tuple[Item, ...] = (
    Item("t-shirt", ("t-shirt", "tee"), ("T恤",), 0, _emoji("t-shirt") + _glyphs("t-shirt")),
    Item("trousers", ("trousers", "pants", "jeans"), ("裤子", "长裤", "牛仔裤"), 1, _emoji("jeans") + _glyphs("trousers")),
    Item("hoodie", ("hoodie", "pullover", "sweater"), ("卫衣", "连帽卫衣", "毛衣"), 2, _glyphs("hoodie")),
    Item("dress", ("dress", "shirt dress"), ("连衣裙", "衬衫裙", "裙子"), 3, _emoji("dress") + _glyphs("dress", "travel-dress")),
    Item("evening dress", ("evening dress", "gown"), ("晚礼服",), None, _glyphs("large-dress", "ample-dress")),
    Item(
        "coat",
        ("coat", "trench coat", "parka", "jacket", "blazer"),
        ("大衣", "风衣", "派克大衣", "夹克", "西装外套"),
        4,
        _emoji("coat") + _glyphs("moncler-jacket"),
    ),
    Item("sandals", ("sandals",), ("凉鞋",), 5, _emoji("womans-sandal") + _glyphs("sandal")),
    Item("shirt", ("shirt", "blouse"), ("衬衫", "女士衬衫"), 6, _emoji("womans-clothes") + _glyphs("shirt", "polo-shirt")),
    Item(
        "sneakers",
        ("sneakers", "shoes"),
        ("运动鞋", "鞋子"),
        7,
        _emoji("running-shoe") + _glyphs("running-shoe", "converse-shoe"),
    ),
    Item(
        "handbag",
        ("handbag", "bag"),
        ("手提包", "包"),
        8,
        _emoji("handbag", "clutch-bag") + _glyphs("hand-bag", "shoulder-bag"),
    ),
    Item(
        "boots",
        ("ankle boots", "boots"),
        ("短靴", "靴子"),
        9,
        _emoji("womans-boot") + _glyphs("boots", "leather-boot", "chelsea-boot"),
    ),
    Item("skirt", ("skirt", "pleated skirt"), ("半身裙", "百褶裙"), None, _glyphs("skirt")),
    Item(
        "hat",
        ("hat", "beret"),
        ("帽子", "贝雷帽"),
        None,
        _emoji("womans-hat", "top-hat") + _glyphs("fedora", "top-hat", "winter-hat"),
    ),
    Item("scarf", ("scarf",), ("围巾",), None, _emoji("scarf")),
    Item("heels", ("high heels", "heels"), ("高跟鞋",), None, _emoji("high-heeled-shoe") + _glyphs("high-heel")),
    # No icon set draws a qipao; a kimono's long wrapped shape with a collar is the nearest, so that is
    # what "qipao" shows (written in DATA.md).
    Item("qipao", ("qipao", "cheongsam"), ("旗袍",), None, _emoji("kimono") + _glyphs("kimono")),
)


@dataclass(frozen=True)
class Colour:
    name: str
    zh: tuple[str, ...]
    rgb: tuple[int, int, int]


# Named colours, spread so that each stays itself under shading (crimson is a deep red, navy a dark
# blue, ivory a warm cream, emerald a blue-green).
COLOURS: tuple[Colour, ...] = (
    Colour("red", ("红色",), (205, 30, 35)),
    Colour("crimson", ("深红色", "绯红"), (135, 8, 40)),
    Colour("pink", ("粉色",), (240, 145, 175)),
    Colour("orange", ("橙色",), (240, 125, 25)),
    Colour("gold", ("金色",), (210, 165, 35)),
    Colour("yellow", ("黄色",), (245, 220, 45)),
    Colour("beige", ("米色",), (205, 180, 135)),
    Colour("ivory", ("象牙白",), (242, 232, 196)),
    Colour("white", ("白色",), (252, 252, 252)),
    Colour("green", ("绿色",), (60, 160, 55)),
    Colour("emerald", ("祖母绿",), (0, 110, 85)),
    Colour("blue", ("蓝色",), (40, 105, 215)),
    Colour("navy", ("藏青色", "海军蓝"), (22, 32, 90)),
    Colour("purple", ("紫色",), (115, 45, 160)),
    Colour("brown", ("棕色",), (110, 68, 38)),
    Colour("grey", ("灰色",), (130, 130, 130)),
    Colour("black", ("黑色",), (28, 28, 28)),
)


@dataclass(frozen=True)
class Word:
    """A closed-set word with its English and Chinese forms (the first of each is the caption's default)."""

    name: str
    en: tuple[str, ...]
    zh: tuple[str, ...]


PATTERNS: tuple[Word, ...] = (
    Word("solid", ("solid", "plain"), ("纯色",)),
    Word("striped", ("striped",), ("条纹",)),
    Word("dotted", ("polka dot", "dotted"), ("波点",)),
    Word("checked", ("checked", "plaid"), ("格纹",)),
    Word("floral", ("floral",), ("碎花", "印花")),
)

# Fabric looks: how the surface renders (sheen, weave, grain, translucency), on top of colour and pattern.
FABRICS: tuple[Word, ...] = (
    Word("silk", ("silk",), ("丝绸", "真丝")),
    Word("satin", ("satin",), ("缎面",)),
    Word("cotton", ("cotton",), ("棉", "纯棉")),
    Word("linen", ("linen",), ("亚麻",)),
    Word("denim", ("denim",), ("牛仔布",)),
    Word("wool", ("wool",), ("羊毛",)),
    Word("cashmere", ("cashmere",), ("羊绒",)),
    Word("leather", ("leather",), ("皮革", "真皮")),
    Word("velvet", ("velvet",), ("丝绒",)),
    Word("chiffon", ("chiffon",), ("雪纺",)),
    Word("polyester", ("polyester",), ("涤纶",)),
)

# Trends and photo styles fill the scheduler templates' other slots; they change nothing drawn, so the
# model learns to read past them, as it must for a scheduler prompt.
TRENDS: tuple[Word, ...] = (
    Word("minimalist", ("minimalist",), ("极简", "简约")),
    Word("retro", ("retro",), ("复古",)),
    Word("streetwear", ("streetwear",), ("街头风",)),
    Word("bohemian", ("bohemian",), ("波西米亚",)),
    Word("preppy", ("preppy",), ("学院风",)),
    Word("elegant", ("elegant",), ("优雅",)),
    Word("sporty", ("sporty",), ("运动风",)),
    Word("chinese style", ("chinese style",), ("中国风",)),
    Word("spring", ("spring",), ("春季",)),
    Word("summer", ("summer",), ("夏季",)),
    Word("autumn", ("autumn",), ("秋季",)),
    Word("winter", ("winter",), ("冬季",)),
)

PHOTO_STYLES: tuple[Word, ...] = (
    Word("studio photo", ("studio photo",), ("影棚",)),
    Word("product shot", ("product shot",), ("产品图",)),
    Word("catalog", ("catalog",), ("目录",)),
    Word("e-commerce", ("e-commerce",), ("电商",)),
)


@dataclass(frozen=True)
class Dish:
    """A dish class: the emoji that draws it and the dish names it stands for (first: its own name)."""

    icon: str
    en: tuple[str, ...]
    zh: tuple[str, ...]
    keywords: tuple[str, ...] = field(default=())


# Dishes keep their own colours. Where no emoji draws a dish of the knowledge graph, the nearest one
# stands for it (mapo tofu: red sauce over rice; kung pao chicken: the takeout box it is pictured in);
# DATA.md lists each such choice.
DISHES: tuple[Dish, ...] = (
    Dish("steaming-bowl", ("ramen", "beef noodles", "noodle soup"), ("拉面", "牛肉面", "汤面"), ("umami", "spicy")),
    Dish("dumpling", ("dumplings", "xiaolongbao"), ("饺子", "小笼包"), ("steaming", "pork", "scallion")),
    Dish("sushi", ("sushi",), ("寿司",), ("fish", "rice", "umami")),
    Dish("pizza", ("pizza",), ("披萨",), ("cheese", "tomato", "baking")),
    Dish("shortcake", ("tiramisu", "cake slice", "strawberry shortcake"), ("提拉米苏", "蛋糕", "草莓蛋糕"), ("sweet",)),
    Dish("birthday-cake", ("chocolate cake", "birthday cake"), ("巧克力蛋糕", "生日蛋糕"), ("sweet", "chocolate")),
    Dish("moon-cake", ("mooncake",), ("月饼",), ("red bean", "sweet", "baking")),
    Dish("cooked-rice", ("steamed rice", "rice"), ("米饭",), ("steaming",)),
    Dish("curry-rice", ("mapo tofu", "curry rice"), ("麻婆豆腐", "咖喱饭"), ("spicy", "numbing", "tofu", "sichuan pepper")),
    Dish("rice-ball", ("rice ball", "onigiri"), ("饭团",), ("rice",)),
    Dish("fried-shrimp", ("fried shrimp", "tempura"), ("炸虾", "天妇罗"), ("shrimp", "deep-frying", "crispy")),
    Dish("pot-of-food", ("hotpot", "stew"), ("火锅", "炖菜"), ("spicy", "beef", "mushroom", "dried chili")),
    Dish("bowl-with-spoon", ("hot and sour soup", "soup"), ("酸辣汤", "汤"), ("sour", "tofu", "egg", "mushroom")),
    Dish("shallow-pan-of-food", ("fried rice", "paella"), ("炒饭", "海鲜饭"), ("egg", "shrimp", "stir-frying")),
    Dish("takeout-box", ("kung pao chicken", "chinese takeout"), ("宫保鸡丁", "中餐外卖"), ("peanuts", "dried chili", "chicken")),
    Dish("meat-on-bone", ("sweet and sour pork", "braised pork"), ("咕咾肉", "红烧肉"), ("sweet", "sour", "pork")),
    Dish("burrito", ("spring rolls", "burrito"), ("春卷", "墨西哥卷饼"), ("crispy", "deep-frying")),
    Dish("poultry-leg", ("peking duck", "roast chicken"), ("北京烤鸭", "烤鸡"), ("roasting", "duck", "crispy")),
    Dish("spaghetti", ("spaghetti", "pasta"), ("意大利面",), ("tomato", "cheese")),
    Dish("hamburger", ("hamburger", "burger"), ("汉堡",), ("beef", "cheese")),
    Dish("french-fries", ("french fries", "fries"), ("薯条",), ("crispy", "deep-frying")),
    Dish("hot-dog", ("hot dog",), ("热狗",), ()),
    Dish("taco", ("taco",), ("墨西哥卷",), ("spicy", "beef")),
    Dish("green-salad", ("green salad", "salad"), ("蔬菜沙拉", "沙拉"), ("fresh",)),
    Dish("oden", ("oden",), ("关东煮",), ("savory",)),
    Dish("dango", ("dango",), ("团子",), ("sweet",)),
    Dish("doughnut", ("doughnut", "donut"), ("甜甜圈",), ("sweet", "chocolate")),
    Dish("cookie", ("cookie",), ("曲奇",), ("sweet", "chocolate", "baking")),
    Dish("pie", ("pie",), ("派",), ("baking", "sweet")),
    Dish("pancakes", ("pancakes",), ("松饼",), ("sweet", "honey")),
    Dish("waffle", ("waffle",), ("华夫饼",), ("sweet",)),
    Dish("croissant", ("croissant",), ("羊角面包", "可颂"), ("baking", "crispy")),
    Dish("bread", ("bread", "loaf"), ("面包",), ("baking", "flour")),
    Dish("bagel", ("bagel",), ("贝果",), ("baking",)),
    Dish("pretzel", ("pretzel",), ("椒盐卷饼",), ("baking",)),
    Dish("cheese-wedge", ("cheese",), ("奶酪", "芝士"), ()),
    Dish("cooking", ("fried egg",), ("煎蛋",), ("egg",)),
    Dish("bacon", ("bacon",), ("培根",), ("crispy",)),
    Dish("cut-of-meat", ("steak",), ("牛排",), ("beef", "roasting")),
    Dish("crab", ("crab",), ("螃蟹",), ("steaming", "umami")),
    Dish("lobster", ("lobster",), ("龙虾",), ("steaming",)),
    Dish("oyster", ("oyster",), ("生蚝",), ("fresh",)),
    Dish("fortune-cookie", ("fortune cookie",), ("幸运饼干",), ("sweet",)),
    Dish("fondue", ("fondue",), ("奶酪火锅",), ("cheese",)),
    Dish("sandwich", ("sandwich",), ("三明治",), ("cheese", "tomato")),
    Dish("tamale", ("tamale",), ("玉米粽",), ()),
    Dish("falafel", ("falafel",), ("炸豆丸子",), ("deep-frying",)),
    Dish("stuffed-flatbread", ("pita wrap", "kebab wrap"), ("口袋饼",), ()),
    Dish("popcorn", ("popcorn",), ("爆米花",), ("sweet",)),
    Dish("ice-cream", ("ice cream",), ("冰淇淋",), ("sweet",)),
    Dish("soft-ice-cream", ("soft serve",), ("甜筒",), ("sweet",)),
    Dish("shaved-ice", ("shaved ice",), ("刨冰",), ("sweet",)),
    Dish("cupcake", ("cupcake",), ("纸杯蛋糕",), ("sweet",)),
    Dish("bento-box", ("bento",), ("便当",), ("rice", "fish")),
    Dish("rice-cracker", ("rice cracker",), ("仙贝",), ("crispy",)),
    Dish("fish-cake-with-swirl", ("fish cake",), ("鱼板",), ("fish",)),
    Dish("roasted-sweet-potato", ("roasted sweet potato",), ("烤红薯",), ("roasting", "sweet")),
    Dish("custard", ("custard pudding", "flan"), ("布丁",), ("sweet", "egg")),
    Dish("chocolate-bar", ("chocolate bar",), ("巧克力",), ("sweet", "chocolate")),
)

# Chinese for the dish keywords above (the cuisine templates join keywords of the prompt's language).
DISH_KEYWORDS_ZH: dict[str, str] = {
    "umami": "鲜味", "spicy": "麻辣", "steaming": "清蒸", "pork": "猪肉", "scallion": "葱", "fish": "鱼",
    "rice": "米饭", "cheese": "芝士", "tomato": "番茄", "baking": "烘焙", "sweet": "甜", "chocolate": "巧克力",
    "red bean": "红豆", "numbing": "麻", "tofu": "豆腐", "sichuan pepper": "花椒", "shrimp": "虾仁",
    "deep-frying": "油炸", "crispy": "酥脆", "beef": "牛肉", "mushroom": "蘑菇", "dried chili": "干辣椒",
    "sour": "酸", "egg": "鸡蛋", "stir-frying": "爆炒", "peanuts": "花生", "chicken": "鸡肉", "roasting": "烤",
    "duck": "鸭肉", "fresh": "新鲜", "savory": "咸香", "honey": "蜂蜜", "flour": "面粉",
}

ITEM_NAMES = tuple(i.name for i in ITEMS)
COLOUR_NAMES = tuple(c.name for c in COLOURS)
PATTERN_NAMES = tuple(p.name for p in PATTERNS)
FABRIC_NAMES = tuple(f.name for f in FABRICS)
DISH_NAMES = tuple(d.icon for d in DISHES)
