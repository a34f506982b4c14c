"""The invented catalogue behind make_data.py: product families, policy pages, and the templates that turn a
fact's value into document sentences and questions. Kept apart from the script so that it reads as a list of
steps; nothing here draws random numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    energy: str  # "battery" or "power": which of the two facts its pages state
    energy_format: str
    energy_pool: tuple[object, ...]
    weight_pool: range  # grams
    products: tuple[tuple[str, str], ...]  # (name without "Larkspur", what it is)


FAMILIES = {
    "camera": Family("battery", "{} weeks", tuple(range(10, 27)), range(180, 521, 5), (
        ("Lumen Cam Mini", "a small indoor camera for shelves and desks"),
        ("Lumen Cam Pro", "a wire-free outdoor camera with a spotlight"),
        ("Lumen Cam Flex", "an indoor and outdoor camera on a magnetic mount"),
        ("Lumen Doorbell", "a video doorbell that shows visitors head to toe"),
        ("Lumen Garage Eye", "a wide-angle camera for garages and sheds"),
    )),
    "thermostat": Family("power", "{} watts", tuple("1.2 1.5 1.8 2.4 2.7 3.1 3.6 4.2".split()), range(150, 401, 5), (
        ("Aria Thermostat Core", "a wall thermostat for gas boilers"),
        ("Aria Thermostat Lite", "a battery-free thermostat for rented homes"),
        ("Aria Thermostat Max", "a thermostat for homes with heat pumps and several zones"),
        ("Aria Radiator Valve", "a smart valve that heats one radiator at a time"),
    )),
    "plug": Family("power", "{} watts", ("0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"), range(55, 141), (
        ("Volt Plug Mini", "a compact smart plug with energy monitoring"),
        ("Volt Plug Outdoor", "a weatherproof plug for garden lights and pumps"),
        ("Volt Power Strip", "a strip of four sockets you can switch one by one"),
        ("Volt Plug Duo", "a double plug with two sockets that switch on their own"),
        ("Volt In-Wall Switch", "a relay that fits behind an existing wall switch"),
    )),
    "fan": Family("power", "{} watts", tuple(range(24, 66)), range(1800, 6201, 10), (
        ("Aero Fan 3", "a quiet tower fan for bedrooms and small offices"),
        ("Aero Tower Fan 5", "a tall fan with an air purifier filter"),
        ("Aero Desk Fan", "a small fan that clips onto a desk"),
        ("Aero Ceiling Fan", "a ceiling fan with a dimmable light"),
    )),
    "lock": Family("battery", "{} months", (5, 7, 9, 10, 11, 13, 14), range(240, 1601, 10), (
        ("Keystone Deadbolt", "a smart deadbolt that fits most front doors"),
        ("Keystone Lever Lock", "a lever handle lock for side and back doors"),
        ("Keystone Padlock", "a padlock for bikes, sheds and gates"),
        ("Keystone Keypad", "a keypad that opens a Keystone lock with a code"),
    )),
    "light": Family("power", "{} watts", tuple(range(10, 41)), range(40, 1201, 5), (
        ("Glow Bulb E27", "a colour bulb for standard screw sockets"),
        ("Glow Spot GU10", "a tunable white spotlight for recessed fittings"),
        ("Glow Light Strip", "a two-metre colour strip for shelves and TVs"),
        ("Glow Ceiling Panel", "a flat ceiling light for kitchens and hallways"),
        ("Glow Garden Spot", "an outdoor spotlight for paths and trees"),
    )),
    "speaker": Family("battery", "{} hours", tuple(range(10, 41)), range(300, 1801, 10), (
        ("Chorus Pebble", "a palm-sized speaker for the kitchen or bathroom"),
        ("Chorus Roam", "a portable speaker with a carry strap"),
        ("Chorus Boom", "a large speaker for parties and gardens"),
        ("Chorus Nightstand", "a bedside speaker with an alarm clock"),
    )),
    "sensor": Family("battery", "{} years", ("1.5", "2", "2.5", "3", "3.5", "4", "4.5"), range(25, 121), (
        ("Sentry Door Sensor", "a contact sensor for doors and windows"),
        ("Sentry Motion Sensor", "a motion sensor that can also switch lights"),
        ("Sentry Leak Sensor", "a flood sensor for under sinks and washing machines"),
        ("Sentry Smoke Alarm", "a connected smoke alarm that alerts your phone"),
        ("Sentry Air Monitor", "a monitor for temperature, humidity and carbon dioxide"),
    )),
}  # fmt: skip

# (value format, value pool) for the kinds of fact every product page states; battery/power comes from the family.
PRODUCT_POOLS = {
    "model": ("LK-{}", range(1000, 10000)),
    "connection": ("{}", ("2.4 GHz Wi-Fi", "dual-band Wi-Fi", "Thread", "Zigbee", "Bluetooth Low Energy")),
    "water": ("{}", ("IPX4", "IPX5", "IPX6", "IPX7", "IP54", "IP65", "IP66", "IP67", "IP68")),
    "warranty": ("{} months", (12, 18, 24, 30, 36, 48)),
    "reset": ("{} seconds", (5, 6, 7, 8, 10, 12, 20, 30)),
    "indicator": ("{}", (
        "the firmware is updating", "the Wi-Fi connection has dropped", "the device is waiting to be paired",
        "the hub is out of range", "the device is running too warm", "the cloud service cannot be reached",
        "an automation is paused",
    )),
}  # fmt: skip
CUES = tuple(
    f"a {speed} {colour} blink" for speed in ("slow", "fast", "double") for colour in ("amber", "blue", "red")
)

# Three ways to write each fact's sentence, so that pages differ in more than their numbers.
SENTENCES = {
    "model": ("Its model number is {v}.", "The model number, {v}, is printed on the label underneath.",
              "Look for model number {v} on the box and the label."),
    "connection": ("It connects over {v}.", "It joins your home network over {v}.",
                   "The {short} talks to the Larkspur app over {v}."),
    "battery": ("The battery lasts {v}.", "Battery life is {v} in typical use.",
                "Expect about {v} of battery life."),
    "power": ("It draws {v} in normal use.", "Power draw is {v} while it is running.",
              "In use it draws {v} from the mains."),
    "weight": ("It weighs {v}.", "The {short} weighs {v}.", "Weight: {v}."),
    "water": ("It is rated {v} for water resistance.", "Its water-resistance rating is {v}.",
              "The housing is rated {v} against water."),
    "warranty": ("The standard warranty lasts {v}.", "Larkspur covers it with a warranty of {v}.",
                 "Warranty: {v} from the date of purchase."),
    "reset": ("To reset it, hold the pairing button for {v} until the light goes out.",
              "Hold the pairing button for {v} to restore the factory settings.",
              "For a factory reset, press and hold the pairing button for {v}."),
    "indicator": ("{Cue} means {v}.", "If you see {cue}, {v}.", "{Cue} on the status light means {v}."),
}  # fmt: skip
INTROS = ("The {full} is {blurb}.", "Meet the {full}, {blurb}.", "This page covers the {full}, {blurb}.")
SPEC_HEADINGS = ("Specifications", "Technical details", "At a glance")
RESET_HEADINGS = ("Factory reset", "Resetting", "Starting over")
RESET_NOTES = (
    "Schedules and automations are removed, but the device stays on your account.",
    "This erases its settings; pair it again from the Larkspur app afterwards.",
    "Only do this when support asks you to, or before you give the device away.",
)
LIGHT_HEADINGS = ("Status light", "What the light means", "Indicator light")
LIGHT_NOTES = ("A steady white light means all is well.", "When all is well, the light stays off.")

QUESTIONS = {
    "model": ("What is the model number of the {full}?", "Which model number does the {short} have?",
              "What model number is on the label of the {short}?"),
    "connection": ("How does the {full} connect to the network?", "What wireless connection does the {short} use?",
                   "Over which radio does the {short} talk to the Larkspur app?"),
    "battery": ("How long does the battery of the {full} last?", "What is the battery life of the {short}?",
                "How long does the {short} run on its battery?"),
    "power": ("How much power does the {full} draw?", "What is the power draw of the {short}?",
              "How many watts does the {short} use?"),
    "weight": ("How much does the {full} weigh?", "What is the weight of the {short}?", "How heavy is the {short}?"),
    "water": ("What is the water-resistance rating of the {full}?", "Which IP rating does the {short} have?",
              "How water-resistant is the {short}?"),
    "warranty": ("How long is the warranty on the {full}?", "What warranty period comes with the {short}?",
                 "For how long is the {short} covered by the standard warranty?"),
    "reset": ("How long do I hold the pairing button to reset the {full}?",
              "For how long must the pairing button be held to factory reset the {short}?",
              "How many seconds does it take to reset the {short} with the pairing button?"),
    "indicator": ("What does {cue} on the {full} mean?", "On the {short}, what does {cue} indicate?",
                  "What is the {short} telling me with {cue}?"),
}  # fmt: skip


@dataclass(frozen=True)
class Section:
    heading: str
    paragraph: str  # states one fact, as {v}
    value_format: str
    pool: tuple[object, ...]
    questions: tuple[str, str, str]


@dataclass(frozen=True)
class Policy:
    slug: str
    title: str
    intro: str
    sections: tuple[Section, ...]
    closing: tuple[str, str]  # a last (heading, paragraph) that states no fact, so the page runs to several chunks


POLICIES = (
    Policy("returns", "Returns policy",
        "This policy covers products bought from the Larkspur Home online store or in the Larkspur app. Products "
        "bought from a retailer follow that retailer's return rules, although Larkspur support still helps you set "
        "them up and fix problems. Subscriptions are covered by the subscription billing policy instead.", (
        Section("Return window",
            "You can return most products within {v} of delivery for a full refund, for any reason. The window "
            "starts on the day the carrier marks the parcel as delivered, not on the order date. People who received "
            "a product as a gift can return it too; the refund then goes to the buyer's original payment method.",
            "{} days", (30, 45, 60, 100),
            ("Within how many days of delivery can I return a Larkspur product?",
             "How long is the return window for Larkspur Home orders?",
             "How much time do I have to send back something I bought in the Larkspur store?")),
        Section("Opened products",
            "Opened products are welcome back as long as every part is included. If the original packaging is "
            "missing or badly damaged, a restocking fee of {v} of the price is kept from the refund. Products that "
            "a Larkspur installer fitted in your home are exempt from this fee.",
            "{} percent", (10, 15, 20, 25),
            ("What restocking fee does Larkspur charge when the packaging of a return is missing?",
             "How much is kept from a refund if the original box is badly damaged?",
             "What share of the price does Larkspur keep on a return without its packaging?")),
        Section("Refunds",
            "Once the warehouse has checked your return, the refund is issued within {v}. Your bank may need a few "
            "more days to show it. You get an email at each step, and the status is also shown under Orders in the "
            "Larkspur app.",
            "{} business days", (3, 5, 7, 10),
            ("How quickly is a refund issued after Larkspur has checked my return?",
             "When do I get my money back once my return has been inspected?",
             "How long does Larkspur take to pay out a refund for a checked return?")),
        Section("Return shipping",
            "Print the prepaid label from the Larkspur app and drop the parcel at any partner point. Return shipping "
            "is free for faulty products; for other returns the label costs {v}, which is taken off the refund.",
            "{} euros", ("4.50", "5.90", "6.95", "7.50"),
            ("How much does the return label cost when the product is not faulty?",
             "What is taken off my refund for the return shipping of a working product?",
             "What does Larkspur charge for the return label when nothing is wrong with the item?")),
    ),
    ("Exchanges",
        "Larkspur does not swap one product for another directly. To change colour or model, return the first "
        "product as described above and place a new order; support can hold stock for you while the return is on "
        "its way. Products damaged by misuse cannot be returned, but the repair service can usually help.")),
    Policy("warranty-claims", "Warranty claims",
        "Every Larkspur product carries a limited hardware warranty; its length is printed on the product's manual "
        "page. This page explains how to make a claim and what happens next. The warranty does not cover drops, "
        "water beyond the product's rating, or repairs by anyone other than Larkspur.", (
        Section("Making a claim",
            "Start a claim in the Larkspur app under Support, or by email. A claim must be filed within {v} of "
            "noticing the fault, and you are asked for the order number and a short video that shows the problem. "
            "Claims for products bought from a retailer also need a copy of the receipt.",
            "{} days", (14, 21, 28, 40),
            ("How soon after noticing a fault must I file a warranty claim?",
             "What is the deadline for making a Larkspur warranty claim once a fault shows up?",
             "Within how many days of spotting a defect do I have to claim under warranty?")),
        Section("Replacements",
            "When a claim is approved, a replacement ships within {v}. You keep the faulty unit until the "
            "replacement arrives, then send it back in the same box with the prepaid label. If the faulty unit is "
            "never sent back, the replacement is charged at its full price.",
            "{} working days", (1, 2, 3, 4),
            ("How fast does a replacement ship once a warranty claim is approved?",
             "After my warranty claim is approved, when is the replacement sent?",
             "How long does Larkspur take to ship an approved warranty replacement?")),
        Section("Larkspur Plus members",
            "Members of Larkspur Plus get a longer warranty: {v} are added to the standard warranty of every product "
            "registered to their account, for as long as the membership stays active. The extension also applies "
            "to products bought before joining.",
            "{} extra months", (6, 12, 18, 24),
            ("How much extra warranty do Larkspur Plus members get?",
             "By how long does a Plus membership extend the standard warranty?",
             "What warranty extension comes with a Larkspur Plus membership?")),
        Section("Repeated faults",
            "A single product can be replaced under warranty at most {v}. If it fails again after that, Larkspur "
            "refunds the purchase price instead of sending another replacement, and the warranty ends.",
            "{} times", (2, 3, 4),
            ("How many times can one product be replaced under warranty?",
             "What is the most replacements a single product can get under the warranty?",
             "How often will Larkspur replace the same product before refunding it instead?")),
    ),
    ("Your statutory rights",
        "This warranty comes on top of your rights under consumer law in your country, never instead of them. If a "
        "product was faulty when it was delivered, you can always ask the seller for a repair or a replacement, "
        "even after the Larkspur warranty has ended. Support can explain which option applies to you.")),
    Policy("shipping", "Shipping",
        "Larkspur Home ships from its warehouse in Rotterdam to addresses in the European Union, the United Kingdom, "
        "Norway and Switzerland. Orders placed before three in the afternoon on a working day leave the warehouse "
        "the same day, and a tracking link is sent by email as soon as the carrier scans the parcel.", (
        Section("Delivery times",
            "Standard delivery takes {v} within the European Union. Deliveries to the United Kingdom, Norway and "
            "Switzerland can take longer, because parcels there pass through customs first.",
            "{} working days", ("2 to 3", "2 to 4", "3 to 5", "4 to 6"),
            ("How long does standard delivery take within the European Union?",
             "How many days should I expect a standard Larkspur delivery in the EU to take?",
             "What is the usual delivery time for a standard order inside the European Union?")),
        Section("Shipping costs",
            "Standard delivery is free on orders over {v}. Below that amount it costs a flat fee, which is shown at "
            "checkout before you pay. Larkspur Plus members get free standard delivery on every order.",
            "{} euros", (49, 59, 79, 99),
            ("Above what order value is standard shipping free?",
             "How much do I need to spend to get free standard delivery from Larkspur?",
             "What is the minimum order for free standard shipping?")),
        Section("Express delivery",
            "Express delivery costs {v} and arrives on the next working day in the Netherlands, Belgium, Luxembourg "
            "and Germany; elsewhere it saves one to two days compared with standard delivery.",
            "{} euros", ("8.95", "9.95", "12.50", "14.95"),
            ("How much does express delivery cost?",
             "What is the price of Larkspur's express shipping option?",
             "What do I pay to have my order sent express?")),
        Section("Lost or damaged parcels",
            "If tracking shows no movement for {v}, or the parcel arrives damaged, contact support: Larkspur sends a "
            "new parcel at no cost and settles the matter with the carrier itself. Please keep a damaged box until "
            "the case is closed.",
            "{} days", (6, 7, 8, 9, 10),
            ("After how many days without tracking updates should I report a parcel as lost?",
             "How long must tracking show no movement before Larkspur treats a parcel as lost?",
             "When does a stuck parcel count as lost for Larkspur support?")),
    ),
    ("Delivery options",
        "At checkout you can choose home delivery, a partner pick-up point, or a named neighbour. Parcels that "
        "cannot be delivered wait at the nearest pick-up point for a week and then go back to the warehouse, after "
        "which the order is refunded minus the shipping cost.")),
    Policy("data-retention", "Data retention",
        "This page lists how long Larkspur Home keeps the data that your devices and your account create, and when "
        "it is deleted. All data is stored in data centres in the European Union. You can download a copy of your "
        "data at any time from the privacy section of the Larkspur app.", (
        Section("Camera recordings",
            "Without a subscription, motion clips from Lumen cameras are kept in the cloud for {v} and then deleted "
            "automatically. Larkspur Plus members keep clips for longer, and clips saved to a memory card inside the "
            "camera never leave your home.",
            "{} hours", (24, 36, 48, 72),
            ("How long are camera clips kept in the cloud without a subscription?",
             "For how long does Larkspur store motion clips for users without Plus?",
             "When are free cloud recordings from a Lumen camera deleted?")),
        Section("Device history",
            "Temperature, energy and sensor history is kept for {v}, so that the app can show trends and compare one "
            "year with the last. Older history is reduced to monthly averages, which are kept until you delete "
            "your account.",
            "{} months", (13, 15, 25, 26, 27),
            ("How long does Larkspur keep detailed device history such as temperatures?",
             "For how many months is sensor and energy history stored?",
             "How far back does the detailed temperature and energy history in the app go?")),
        Section("Deleting your account",
            "When you delete your account, all recordings, device history and personal details are erased within "
            "{v}. Invoices are the exception: the law requires Larkspur to keep them for seven years.",
            "{} days", (14, 21, 30, 31),
            ("How long does it take for my data to be erased after I delete my account?",
             "Within how many days is personal data removed once an account is deleted?",
             "After deleting my Larkspur account, when is everything erased?")),
        Section("Support conversations",
            "Chats and emails with Larkspur support are kept for {v} after a conversation closes, so that an agent "
            "can pick up a problem that comes back. After that they are anonymised and used only for statistics.",
            "{} months", (6, 9, 11, 15, 20),
            ("How long are support chats and emails kept after a conversation closes?",
             "For how many months does Larkspur keep my conversations with support?",
             "When are closed support conversations anonymised?")),
    ),
    ("Your choices",
        "You can delete single recordings or whole days of history at any time, and you can switch off cloud "
        "recording for each camera. Turning off history for a device stops new data from being stored, but it also "
        "turns off the energy reports and automations that depend on past readings.")),
    Policy("subscription-billing", "Subscription billing",
        "Larkspur Plus is the optional subscription for longer cloud recordings, an extended warranty and priority "
        "support. Every Larkspur device works without it. This page explains prices, trials, renewals and what "
        "happens when you cancel.", (
        Section("Monthly price",
            "Larkspur Plus costs {v} a month, billed on the same day each month. Prices include VAT for the country "
            "of your billing address, and any price change is announced by email at least one month ahead.",
            "{} euros", ("3.99", "4.49", "4.99", "5.49"),
            ("How much does Larkspur Plus cost per month?",
             "What is the monthly price of a Larkspur Plus subscription?",
             "What does the Plus subscription cost me each month?")),
        Section("Yearly plan",
            "The yearly plan costs {v}, paid in one go, which works out cheaper than paying month by month. It "
            "renews automatically, and you get a reminder by email two weeks before each renewal.",
            "{} euros", (39, 44, 54, 57),
            ("How much is the yearly Larkspur Plus plan?",
             "What does a year of Larkspur Plus cost when paid at once?",
             "What is the price of the annual Plus plan?")),
        Section("Free trial",
            "New members get a free trial of {v}. You can cancel at any time during the trial and pay nothing; "
            "otherwise the first payment is taken on the day after the trial ends.",
            "{} days", (7, 10, 14, 30),
            ("How long is the free trial of Larkspur Plus?",
             "For how many days can new members try Plus for free?",
             "What trial period do new Larkspur Plus members get?")),
        Section("Failed payments",
            "If a payment fails, Larkspur tries it again for {v}. During that grace period all Plus features keep "
            "working; after it, the membership is paused until your payment details are updated in the app.",
            "{} days", (3, 5, 7, 10),
            ("How long is the grace period after a failed Plus payment?",
             "For how many days does Larkspur retry a failed subscription payment?",
             "How long do Plus features keep working after a payment fails?")),
    ),
    ("Cancelling",
        "You can cancel Larkspur Plus at any time in the app under Account. Plus features stay on until the end of "
        "the period you have paid for, and no further payments are taken. Yearly plans cancelled within the first "
        "two weeks are refunded in full; after that, no partial refunds are given.")),
    Policy("repairs", "Repairs",
        "Larkspur repairs products after their warranty has ended, and products with damage that the warranty does "
        "not cover. Repairs are done at the service centre in Rotterdam by Larkspur technicians, with original "
        "parts only. Start a repair in the Larkspur app under Support and print the prepaid label.", (
        Section("Repair fee",
            "A repair costs a flat fee of {v} after the warranty has ended, whatever the fault, plus the price of any "
            "parts that need replacing. You are told the total before any work starts and can decline at no cost.",
            "{} euros", (29, 35, 39, 45),
            ("How much does a repair cost after the warranty has ended?",
             "What is the flat repair fee for products out of warranty?",
             "What does Larkspur charge to repair a product once the warranty is over?")),
        Section("Turnaround",
            "Most repairs are finished within {v} of the product arriving at the service centre. You can follow "
            "each step in the app, and you are told as soon as the product is on its way back to you.",
            "{} working days", (5, 6, 8, 12),
            ("How long does a Larkspur repair usually take?",
             "Within how many working days are most repairs finished?",
             "What is the usual turnaround time for a repair at the service centre?")),
        Section("Guarantee on repairs",
            "Every repair carries its own guarantee of {v}, covering both the repaired part and the work. If the same "
            "fault comes back in that time, the product is repaired again for free.",
            "{} days", (60, 90, 120, 180),
            ("How long is a repair guaranteed?",
             "What guarantee does Larkspur give on its repairs?",
             "For how long is the work on a repaired product covered?")),
        Section("Battery replacements",
            "Batteries in cameras, locks, speakers and sensors can be replaced for {v} plus shipping. A battery "
            "replacement is quicker than other repairs and keeps all the settings of the device.",
            "{} euros", (17, 19, 23, 27),
            ("How much does a battery replacement cost?",
             "What does Larkspur charge to replace the battery of a device?",
             "What is the price of swapping the battery in a Larkspur camera or lock?")),
    ),
    ("Before you send a product",
        "Remove the product from your account in the app, take out any memory card, and pack the product with its "
        "power adapter. Larkspur cannot return memory cards found in a product after a repair, and it is not "
        "responsible for accessories that were not asked for.")),
)  # fmt: skip
