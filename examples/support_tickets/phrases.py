"""Phrase tables for make_data.py: the fictional company Larkspur Home, its products, and ticket parts.

The labels are a function of the cues, so a small model can learn them from a few hundred rows:
- category: which table the problem sentence comes from (ISSUES[category]);
- product:  the product named (or aliased) in that sentence; no sentence names a second product,
            and only larkspur plus tickets talk about plans, subscriptions or cloud history;
- priority: the one urgency cue in PRIORITY_CUES / SHORT_CUES (medium tickets may have none).
Every other part (greetings, context, sign-offs) is drawn for all labels alike, so it carries no signal.
"""

from __future__ import annotations

CATEGORIES = ["billing", "bug", "account", "shipping", "feature_request", "how_to"]
PRIORITIES = ["low", "medium", "high", "urgent"]
PRODUCTS = ["lumen cam", "aria thermostat", "volt plug", "larkspur app", "larkspur plus"]

# Which products and priorities make sense for a category: nobody ships an app, and a feature request
# is never an emergency. Every label still appears in every split (tests/test_demo_data.py checks).
ALLOWED = {
    "billing": (["lumen cam", "aria thermostat", "volt plug", "larkspur plus"], PRIORITIES),
    "bug": (PRODUCTS, PRIORITIES),
    "account": (PRODUCTS, PRIORITIES),
    "shipping": (["lumen cam", "aria thermostat", "volt plug"], PRIORITIES),
    "feature_request": (PRODUCTS, ["low", "medium"]),
    "how_to": (PRODUCTS, ["low", "medium", "high"]),
}

# How customers name each product; templates say "my {name}" / "the {name}".
NAMES = {
    "lumen cam": ["Lumen Cam", "Lumen camera", "security camera", "outdoor camera", "Lumen Cam 2", "porch camera"],
    "aria thermostat": ["Aria thermostat", "Aria", "smart thermostat", "thermostat", "Aria T2"],
    "volt plug": ["Volt Plug", "Volt smart plug", "smart plug", "Volt plug", "Volt outlet"],
    "larkspur app": ["Larkspur app", "app", "iPhone app", "Android app", "mobile app"],
    "larkspur plus": ["Larkspur Plus subscription", "Plus plan", "Larkspur Plus", "cloud plan", "Plus membership"],
}

# What was bought, for billing and shipping tickets.
PURCHASES = {
    "lumen cam": ["my Lumen Cam order", "the two Lumen Cams I bought", "a Lumen Cam 2-pack", "my new security camera"],
    "aria thermostat": ["the Aria thermostat I ordered", "my Aria order", "a smart thermostat from your store"],
    "volt plug": ["a 4-pack of Volt Plugs", "my Volt Plug order", "three Volt smart plugs"],
    "larkspur plus": ["my Larkspur Plus subscription", "the Plus plan", "my cloud plan", "the yearly Plus membership"],
}

BILLING = [
    "I was charged twice for {purchase} ({order})",
    "I'd like a refund for {purchase}, I sent it back two weeks ago",
    "the invoice for {purchase} says {amount} but checkout showed {amount2}",
    "my card was declined when paying for {purchase} but the money still left my account",
    "I need a proper VAT invoice for {purchase} for my company",
    "the discount code wasn't applied to {purchase}",
]
BILLING_PLUS = [
    "I cancelled my {name} last month but was still billed {amount}",
    "my {name} renewed at the yearly price instead of the monthly one",
]

SHIPPING = [
    "still no sign of {purchase} ({order}) after two weeks",
    "tracking for {purchase} has said 'label created' since Monday",
    "{purchase} arrived in a crushed box and one unit is cracked",
    "I got the wrong item instead of {purchase}",
    "I need to change the delivery address for {purchase} ({order})",
    "the courier marked {purchase} as delivered but nothing came",
    "{purchase} arrived with the power adapter missing",
]

BUGS = {
    "lumen cam": [
        "the live view on my {name} just shows a black screen",
        "my {name} stopped sending motion alerts",
        "night vision on the {name} makes everything look pink",
        "the {name} keeps dropping off the wifi every few hours",
        "my {name} records clips with no sound",
        "the status light on my {name} blinks orange and it won't stream",
    ],
    "aria thermostat": [
        "my {name} ignores the heating schedule and resets it every night",
        "the {name} shows 85 degrees when the room is clearly cold",
        "my {name} won't reconnect to wifi after the firmware update",
        "the {name} switches the heating on and off every few minutes",
        "the screen on my {name} went blank but the heating still runs",
    ],
    "volt plug": [
        "my {name} turns itself off at random times",
        "the energy graph for my {name} shows zero watts while the heater runs",
        "the timer on my {name} never fires",
        "the {name} blinks red and won't respond to the button",
        "my {name} shows offline even though it has power",
    ],
    "larkspur app": [
        "the {name} crashes as soon as I open it",
        "the {name} shows a blank home screen since the latest update",
        "the {name} freezes when I tap the Devices tab",
        "dark mode in the {name} makes the text unreadable",
        "the {name} drains my phone battery overnight",
    ],
    "larkspur plus": [
        "my {name} should keep 30 days of history but everything older than a day is gone",
        "cloud backup on my {name} says 'failed' every night",
        "downloading clips from my {name} history gives error 502",
        "the smart alerts included in my {name} stopped working",
        "the {name} timeline skips whole hours of footage",
    ],
}

ACCOUNTS = {
    "lumen cam": [
        "I need to transfer my {name} to the new owners of my house",
        "my partner can't see the {name} I shared with her",
        "I want to remove my ex's access to the {name}",
    ],
    "aria thermostat": [
        "I moved out and need to remove the {name} from my account",
        "I want to give my landlord access to the {name}",
        "the {name} is still registered to my old email address",
    ],
    "volt plug": [
        "the {name} is still linked to my old account",
        "I want to share my {name} with my roommate",
        "I need to move the {name} to my new account",
    ],
    "larkspur app": [
        "I can't log in to the {name} because the password reset email never arrives",
        "the {name} keeps asking for a 2FA code but I lost my old phone",
        "I want to change the email address I use for the {name}",
        "the {name} says my account is locked",
    ],
    "larkspur plus": [
        "I want to move my {name} to my husband's account",
        "my {name} is under my old email and I can't get into it",
        "I'd like to add a second user to my {name}",
    ],
}

FEATURES = {
    "lumen cam": [
        "a 4K recording mode on the {name}",
        "a way to pause alerts from the {name} while I'm home",
        "separate motion zones for day and night on the {name}",
        "pet detection on the {name}",
    ],
    "aria thermostat": [
        "humidity readings on the {name}",
        "a vacation mode for the {name}",
        "geofencing so the {name} heats up when I'm nearly home",
        "a bigger font on the {name} display",
    ],
    "volt plug": [
        "sunrise and sunset timers for the {name}",
        "a countdown timer on the {name}",
        "monthly energy cost estimates for the {name}",
        "an away mode that switches the {name} on and off randomly",
    ],
    "larkspur app": [
        "an iPad layout for the {name}",
        "home screen widgets for the {name}",
        "Apple Watch support in the {name}",
        "a way to reorder rooms in the {name}",
    ],
    "larkspur plus": [
        "a 60-day history option for the {name}",
        "family sharing for the {name}",
        "a single-device tier of the {name}",
        "an export of a whole day of footage from the {name}",
    ],
}

HOW_TOS = {
    "lumen cam": [
        "change the motion sensitivity on my {name}",
        "share the {name} live view with my partner",
        "mount the {name} on a brick wall",
        "turn off the status light on the {name}",
    ],
    "aria thermostat": [
        "set a weekly heating schedule on the {name}",
        "connect the {name} to a new wifi network",
        "switch the {name} from Fahrenheit to Celsius",
        "lock the {name} so the kids can't change it",
    ],
    "volt plug": [
        "make the {name} turn off at midnight",
        "reset the {name} to factory settings",
        "see how much power my {name} used last month",
        "connect the {name} to Alexa",
    ],
    "larkspur app": [
        "turn on notifications in the {name}",
        "add a new room in the {name}",
        "switch the {name} to Spanish",
        "export my device list from the {name}",
    ],
    "larkspur plus": [
        "download a whole day of footage from my {name}",
        "check how many days of history my {name} keeps",
        "add a second home to my {name}",
        "find the clips saved by my {name}",
    ],
}

# Sentence frames around the problem; "{x}" is the table entry above, already filled in.
FRAMES = {
    "billing": ["{x}.", "I have a billing question: {x}.", "I noticed that {x}.", "Quick billing issue - {x}."],
    "bug": ["{x}.", "Since yesterday {x}.", "I'm having a problem: {x}.", "Not sure what happened, but {x}."],
    "account": ["{x}.", "I need help with my account: {x}.", "Account question - {x}."],
    "shipping": ["{x}.", "Question about my delivery: {x}.", "{x}, can you check?"],
    "feature_request": [
        "It would be great to have {x}.",
        "Please add {x}.",
        "Feature request: {x}.",
        "I'd love to see {x} in a future update.",
        "Any plans for {x}?",
    ],
    "how_to": [
        "How do I {x}?",
        "Can you tell me how to {x}?",
        "Where is the setting to {x}?",
        "Is there a way to {x}?",
        "What's the best way to {x}?",
    ],
}

# Neutral context: drawn for every priority, so it never decides one.
CONTEXT = {
    "billing": [
        "My order number is {order}.",
        "I paid with a Visa card.",
        "The charge is on my statement from the 3rd.",
    ],
    "bug": ["I already tried restarting it.", "It started after the last update.", "My wifi is fine otherwise."],
    "account": ["My username is {email}.", "I've been a customer for three years.", "I can verify my identity."],
    "shipping": [
        "My order number is {order}.",
        "The tracking page hasn't changed in days.",
        "I ordered it on the 12th.",
    ],
    "feature_request": ["I love the product otherwise.", "A few friends asked for the same thing.", "Keep it up!"],
    "how_to": ["I couldn't find it in the help center.", "The manual isn't clear on this.", "I'm not very technical."],
}

# The priority signal: several phrasings per level, about timing, impact and tone, not one keyword.
PRIORITY_CUES = {
    "urgent": [
        "This is urgent, please help ASAP.",
        "Please treat this as an emergency.",
        "I need this fixed immediately.",
        "Our shop is open right now and this has shut us down.",
        "Please escalate this right away, it can't wait.",
        "We can't operate until this is solved, please respond immediately.",
    ],
    "high": [
        "I need this sorted by Friday.",
        "We have guests arriving tomorrow, so I need this resolved before then.",
        "Please prioritise this, it's affecting our customers.",
        "I need an answer today if at all possible.",
        "My rental inspection is on Monday, so please get back to me soon.",
        "It's holding up our office opening next week.",
    ],
    "medium": [
        "Could someone take a look?",
        "It's been like this for a few days now.",
        "Would appreciate a reply this week.",
        "Please advise.",
    ],
    "low": [
        "No rush at all.",
        "Whenever you get a chance.",
        "Not urgent, just curious.",
        "Low priority, just thought I'd mention it.",
        "Take your time with this one.",
        "It's a minor thing, no hurry.",
    ],
}
# One-line tickets carry the cue as a tail: "The timer on my Volt Plug never fires - no rush."
SHORT_CUES = {
    "urgent": [" - URGENT!", ", need help ASAP!", ". Emergency, please call me."],
    "high": [", need it fixed by tomorrow.", " - please prioritise, customers are affected."],
    "medium": ["."],  # a plain statement: medium is also what an unmarked ticket is
    "low": [" - no rush.", " (not urgent).", ", whenever you have time."],
}
# The share of medium tickets with no cue at all: "normal" is also what an unmarked ticket is.
MEDIUM_WITHOUT_CUE = 0.4

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Hey team,", "Hello support,", "Good morning,", "Dear Larkspur support,"]
SIGN_OFFS = ["Thanks,", "Thank you!", "Cheers,", "Regards,", "Best,", "Thanks in advance,"]
FIRST_NAMES = ["Maria", "Tom", "Priya", "Jonas", "Aisha", "Ken", "Lucia", "Dave", "Mei", "Oluwaseun", "Sam", "Ingrid"]

# Real-world slips, applied to a few tickets; cue words may be hit too, as in real mail.
TYPOS = {
    "because": "becuase",
    "already": "allready",
    "thermostat": "thermostst",
    "address": "adress",
    "tomorrow": "tommorow",
    "immediately": "immediatly",
    "schedule": "schedual",
    "account": "acount",
    "camera": "camrea",
    "arrived": "arived",
    "please": "pls",
    "update": "udpate",
    "nothing": "nothign",
}
